/**
 * One state-store request read from its RESP payload: the command, its arity and options
 * (docs/state-store.md). Pure: it touches neither the table nor the clock.
 */
import { ERRORS } from './protocol.js';
import { decodeRequest } from './resp.js';
import { codes } from './table.js';

export const COMMANDS = ['GET', 'SET', 'DEL', 'VDEL', 'KEYNOTIFY'] as const;
export type Command = (typeof COMMANDS)[number];

export interface StateRequest {
  verb: Command;
  key: Buffer;
  /** SET: the value; VDEL: the value the key must hold. */
  arg: Buffer | undefined;
  /** SET: codes.SET_NX / SET_NEX, else 0. */
  flags: number;
  /** SET PX: expiry in ms, else 0. */
  px: number;
  /** KEYNOTIFY ... STOP */
  stop: boolean;
}

/** A request, or why it is refused and what it counts as ("invalid" when it names no command). */
export type ParsedRequest = { ok: true; request: StateRequest } | { ok: false; op: string; error: string };

const refused = (op: string, error: string): ParsedRequest => ({ ok: false, op, error });

export function parseRequest(payload: Buffer): ParsedRequest {
  const parts = decodeRequest(payload);
  if (!parts) return refused('invalid', ERRORS.syntax);
  const verb = parts[0]!.toString('latin1') as Command;
  if (!COMMANDS.includes(verb)) return refused('invalid', ERRORS.unknownCommand);
  const n = parts.length;

  let flags = 0;
  let px = 0;
  let stop = false;
  switch (verb) {
    case 'GET':
    case 'DEL':
      if (n !== 2) return refused(verb, ERRORS.arity);
      break;
    case 'VDEL':
      if (n !== 3) return refused(verb, ERRORS.arity);
      break;
    case 'KEYNOTIFY':
      if (n !== 2 && n !== 3) return refused(verb, ERRORS.arity);
      if (n === 3) {
        if (parts[2]!.toString('latin1') !== 'STOP') return refused(verb, ERRORS.syntax);
        stop = true;
      }
      break;
    case 'SET': {
      if (n < 3) return refused(verb, ERRORS.arity);
      for (let i = 3; i < n; i++) {
        const opt = parts[i]!.toString('latin1');
        if (opt === 'NX' || opt === 'NEX') {
          if (flags !== 0) return refused(verb, ERRORS.syntax);
          flags = opt === 'NX' ? codes.SET_NX : codes.SET_NEX;
        } else if (opt === 'PX') {
          if (px !== 0 || i + 1 >= n) return refused(verb, ERRORS.syntax);
          const text = parts[++i]!.toString('latin1');
          if (!/^\d{1,15}$/.test(text) || Number(text) < 1) return refused(verb, ERRORS.syntax);
          px = Number(text);
        } else return refused(verb, ERRORS.syntax);
      }
      break;
    }
  }

  const key = parts[1]!;
  if (key.length === 0) return refused(verb, ERRORS.emptyKey);
  const arg = verb === 'SET' || verb === 'VDEL' ? parts[2] : undefined;
  return { ok: true, request: { verb, key, arg, flags, px, stop } };
}
