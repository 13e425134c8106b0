import mqtt, { type IClientOptions, type MqttClient, type IPublishPacket } from 'mqtt';

export interface Received {
  topic: string;
  payload: Buffer;
  packet: IPublishPacket;
}

/** An MQTT.js client connected to the test broker (no automatic reconnect). */
export async function connectClient(port: number, opts: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 3000, protocolVersion: 5, ...opts }, false);
}

/** Records the messages a client receives; `wait(n)` resolves when n have arrived. */
export function collect(client: MqttClient): { messages: Received[]; wait(n: number, timeoutMs?: number): Promise<Received[]> } {
  const messages: Received[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  client.on('message', (topic, payload, packet) => {
    messages.push({ topic, payload, packet });
    for (const w of [...waiters]) if (messages.length >= w.n) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  return {
    messages,
    async wait(n: number, timeoutMs = 3000): Promise<Received[]> {
      if (messages.length < n) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          new Promise<void>((resolve) => waiters.push({ n, resolve })),
          new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`got ${messages.length} of ${n} messages`)), timeoutMs))),
        ]);
        clearTimeout(timer);
      }
      return messages;
    },
  };
}

/** Closes every client given, ignoring ones already closed. */
export async function closeAll(...clients: (MqttClient | undefined)[]): Promise<void> {
  await Promise.all(clients.map((c) => (c && c.connected ? c.endAsync(true).catch(() => undefined) : c?.end(true))));
}

/**
 * Connect with the message collector attached before the CONNACK, so messages the broker
 * sends right after it (a resumed session's queue) are not missed.
 */
export async function connectCollecting(port: number, opts: IClientOptions = {}): Promise<{ client: MqttClient; got: ReturnType<typeof collect> }> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 3000, protocolVersion: 5, ...opts });
  const got = collect(client);
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  return { client, got };
}
