/**
 * What fired, on its way out: publishes (origin "rules", never fed back into the engine) and
 * set_state writes through the state store, in the order the document gives them, after the
 * message that caused them has been routed (subscribers see house/1 before house/1/alert/):
 * one microtask per batch of messages, not per message. The author's rights (author.ts)
 * are checked here, per concrete topic and key; what they deny is dropped and counted.
 */
import type { Logger } from 'pino';
import type { BrokerApi } from '../broker/api.js';
import type { Message } from '../mqtt/message.js';
import type { RuleOutput } from './runtime.js';

export const RULES_ORIGIN = 'rules';

/** The state store as the rules engine uses it, in the same process (src/state/service.ts). */
export interface RulesStateAccess {
  read(key: Buffer): Buffer | undefined;
  write(key: Buffer, value: Buffer, px?: number): string;
}

/** A queued set_state write. */
interface StateWrite {
  key: string;
  value: Buffer;
  px: number | undefined;
}

export class RuleOutputs {
  /** set_state writes done, and refused by the state store (quota, fencing). */
  stateWrites = 0;
  stateWriteErrors = 0;
  /** Outputs and writes dropped because the document's author may not make them. */
  deniedOutputs = 0;
  deniedStateWrites = 0;
  /** While a set_state write runs: its KEYNOTIFY notifications are not fed back into the engine. */
  writing = false;
  /** Set while the active document has an author with an ACL: may it publish to this topic? */
  outputAllowed: ((topic: string) => boolean) | undefined;
  /** Set while the active document has an author and the state store authorizes keys: may it write this key? */
  stateWriteAllowed: ((key: string) => boolean) | undefined;

  private pending: (Message | StateWrite)[] = [];
  private flushScheduled = false;
  private lastStateErrorLog = 0;

  constructor(
    private readonly broker: Pick<BrokerApi, 'publish'>,
    private readonly states: RulesStateAccess | undefined,
    private readonly log: Logger,
  ) {}

  /** Queues what one message fired (publishes with its QoS and retain flag). */
  queue(outputs: readonly RuleOutput[], qos: 0 | 1 | 2, retain: boolean): void {
    const pending = this.pending;
    const queued = pending.length;
    for (let i = 0; i < outputs.length; i++) {
      const o = outputs[i]!;
      if (o.state) {
        if (this.stateWriteAllowed !== undefined && !this.stateWriteAllowed(o.state.key)) {
          this.deniedStateWrites++;
          continue;
        }
        // a state write waits in line with the publishes: the order the document gives
        pending.push({ key: o.state.key, value: o.payload, px: o.state.px });
        continue;
      }
      if (this.outputAllowed !== undefined && !this.outputAllowed(o.topic)) {
        this.deniedOutputs++;
        continue;
      }
      pending.push({ topic: o.topic, payload: o.payload, qos, retain, origin: RULES_ORIGIN });
    }
    if (pending.length === queued) return; // every output denied
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.flush);
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    const batch = this.pending;
    this.pending = [];
    for (let i = 0; i < batch.length; i++) {
      const m = batch[i]!;
      if ('key' in m) this.writeState(m);
      else this.broker.publish(m);
    }
  };

  private writeState(m: StateWrite): void {
    let answer = 'no state store';
    if (this.states) {
      this.writing = true;
      try {
        answer = this.states.write(Buffer.from(m.key, 'utf8'), m.value, m.px);
      } finally {
        this.writing = false;
      }
    }
    if (answer === 'OK') {
      this.stateWrites++;
      return;
    }
    this.stateWriteErrors++;
    const now = Date.now();
    if (now - this.lastStateErrorLog > 10_000) {
      this.lastStateErrorLog = now;
      this.log.warn({ key: m.key, answer }, 'set_state: the state store refused the write');
    }
  }
}
