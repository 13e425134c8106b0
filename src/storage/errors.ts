/** A storage folder or file the broker cannot use: the CLI prints the message and exits with code 2. */
export class StorageOpenError extends Error {
  readonly code = 'EDB_STORAGE_OPEN';
  constructor(
    readonly path: string,
    reason: string,
  ) {
    super(`cannot open the storage folder ${path}: ${reason}`);
  }
}

/** Appending is refused: the disk is full or EDB_STORAGE_MAX_BYTES is reached (MQTT 0x97). */
export class StorageFullError extends Error {
  readonly code = 'EDB_STORAGE_FULL';
}
