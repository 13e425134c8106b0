/**
 * A typed client for the state store, over an MQTT 5 connection made with MQTT.js. It works
 * against any broker that speaks the state-store protocol (this one, or Azure IoT
 * Operations' broker).
 *
 *   const mqtt = await connectAsync('mqtt://localhost:1883', { protocolVersion: 5, clientId: 'app-1' });
 *   const store = await StateStoreClient.create(mqtt);
 *   await store.set('config', 'on', { expiresInMs: 60_000 });
 *   const { value, version } = await store.get('config');
 *   store.on('notification', (n) => console.log(n.operation, n.key.toString()));
 *   await store.observe('config');
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { IClientPublishOptions, MqttClient } from 'mqtt';
import { formatHlc, HybridLogicalClock, parseHlc, type Hlc } from './hlc.js';
import { decodeAnswer, encodeRequest, type RespValue } from './resp.js';
import { INVOKE_TOPIC, RESERVED_PREFIX, STATE_STORE_ID } from './protocol.js';

export type Bytes = string | Buffer | Uint8Array;

export class StateStoreError extends Error {
  /** "server" for an `-ERR` answer, "timeout", "protocol" for an answer that does not parse, "closed". */
  constructor(
    message: string,
    readonly kind: 'server' | 'timeout' | 'protocol' | 'closed',
  ) {
    super(message);
    this.name = 'StateStoreError';
  }
}

export interface StateStoreClientOptions {
  /** How long to wait for an answer (default 10 s). */
  timeoutMs?: number;
}

export interface SetOptions {
  /** "nx": only if absent; "nex": only if absent or holding exactly this value. */
  condition?: 'nx' | 'nex';
  /** Expire the key after this many milliseconds. */
  expiresInMs?: number;
  /** Fencing token (e.g. a lease lock's), as returned by a SET or as text. */
  fencingToken?: Hlc | string;
}

export interface KeyNotification {
  key: Buffer;
  operation: 'SET' | 'DELETE';
  /** The new value, after a SET. */
  value?: Buffer;
  version?: Hlc;
}

interface Pending {
  resolve(v: { answer: RespValue; version: Hlc | undefined }): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
}

const toBuffer = (b: Bytes): Buffer => (typeof b === 'string' ? Buffer.from(b, 'utf8') : Buffer.isBuffer(b) ? b : Buffer.from(b));

export declare interface StateStoreClient {
  on(event: 'notification', listener: (n: KeyNotification) => void): this;
  once(event: 'notification', listener: (n: KeyNotification) => void): this;
  off(event: 'notification', listener: (n: KeyNotification) => void): this;
}

export class StateStoreClient extends EventEmitter {
  readonly clientId: string;
  readonly responseTopic: string;
  readonly notifyFilter: string;
  private readonly notifyPrefix: string;
  private readonly pending = new Map<string, Pending>();
  private readonly clock: HybridLogicalClock;
  private readonly timeoutMs: number;
  private closed = false;
  private readonly onMessage = (topic: string, payload: Buffer, packet: { properties?: { correlationData?: Buffer; userProperties?: Record<string, string | string[]> } }) =>
    this.handle(topic, payload, packet.properties);

  private constructor(
    private readonly mqtt: MqttClient,
    options: StateStoreClientOptions,
  ) {
    super();
    const clientId = mqtt.options.clientId;
    if (!clientId) throw new Error('StateStoreClient: the MQTT client needs a client id');
    if (mqtt.options.protocolVersion !== 5) throw new Error('StateStoreClient: the state store needs MQTT 5 (protocolVersion: 5)');
    this.clientId = clientId;
    this.responseTopic = `clients/${clientId}/services/statestore/v1/${STATE_STORE_ID}/command/invoke/response`;
    this.notifyPrefix = `${RESERVED_PREFIX}/${Buffer.from(clientId, 'utf8').toString('hex').toUpperCase()}/command/notify/`;
    this.notifyFilter = `${this.notifyPrefix}+`;
    this.clock = new HybridLogicalClock(clientId);
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  /** Subscribe to the response and notification topics, and return a ready client. */
  static async create(mqtt: MqttClient, options: StateStoreClientOptions = {}): Promise<StateStoreClient> {
    const client = new StateStoreClient(mqtt, options);
    mqtt.on('message', client.onMessage);
    try {
      await mqtt.subscribeAsync([client.responseTopic, client.notifyFilter], { qos: 1 });
    } catch (err) {
      mqtt.off('message', client.onMessage);
      throw err;
    }
    return client;
  }

  /** GET: the value, or undefined. `version` is the key's. */
  async get(key: Bytes): Promise<{ value: Buffer | undefined; version?: Hlc }> {
    const { answer, version } = await this.invoke(['GET', toBuffer(key)]);
    if (answer.type === 'bulk') return { value: answer.value ?? undefined, version };
    throw unexpected(answer);
  }

  /** SET: `applied` false when NX/NEX did not hold. `version` is the new one when applied. */
  async set(key: Bytes, value: Bytes, options: SetOptions = {}): Promise<{ applied: boolean; version?: Hlc }> {
    const parts: (string | Buffer)[] = ['SET', toBuffer(key), toBuffer(value)];
    if (options.condition === 'nx') parts.push('NX');
    if (options.condition === 'nex') parts.push('NEX');
    if (options.expiresInMs !== undefined) {
      if (!Number.isInteger(options.expiresInMs) || options.expiresInMs < 1) throw new RangeError('expiresInMs must be a whole number of milliseconds, at least 1');
      parts.push('PX', String(options.expiresInMs));
    }
    const { answer, version } = await this.invoke(parts, options.fencingToken);
    if (answer.type === 'simple' && answer.value === 'OK') return { applied: true, version };
    if (answer.type === 'integer' && answer.value === -1) return { applied: false, version };
    throw unexpected(answer);
  }

  /** DEL: 1 deleted, 0 absent. */
  async del(key: Bytes, options: { fencingToken?: Hlc | string } = {}): Promise<{ deleted: number; version?: Hlc }> {
    const { answer, version } = await this.invoke(['DEL', toBuffer(key)], options.fencingToken);
    if (answer.type === 'integer') return { deleted: answer.value, version };
    throw unexpected(answer);
  }

  /** VDEL: 1 deleted, 0 absent, -1 the key holds another value. */
  async vdel(key: Bytes, value: Bytes, options: { fencingToken?: Hlc | string } = {}): Promise<{ deleted: number; version?: Hlc }> {
    const { answer, version } = await this.invoke(['VDEL', toBuffer(key), toBuffer(value)], options.fencingToken);
    if (answer.type === 'integer') return { deleted: answer.value, version };
    throw unexpected(answer);
  }

  /** KEYNOTIFY: 'notification' events follow for every change of the key. */
  async observe(key: Bytes): Promise<void> {
    const { answer } = await this.invoke(['KEYNOTIFY', toBuffer(key)]);
    if (!(answer.type === 'simple' && answer.value === 'OK')) throw unexpected(answer);
  }

  /** KEYNOTIFY STOP: false when the key was not observed. */
  async unobserve(key: Bytes): Promise<boolean> {
    const { answer } = await this.invoke(['KEYNOTIFY', toBuffer(key), 'STOP']);
    if (answer.type === 'simple' && answer.value === 'OK') return true;
    if (answer.type === 'integer' && answer.value === 0) return false;
    throw unexpected(answer);
  }

  /** Send a raw request (an array of bulk strings) and get the decoded answer. */
  async invoke(parts: (string | Buffer)[], fencingToken?: Hlc | string): Promise<{ answer: RespValue; version: Hlc | undefined }> {
    if (this.closed) throw new StateStoreError('the client is closed', 'closed');
    const correlation = randomBytes(16);
    const id = correlation.toString('hex');
    const userProperties: Record<string, string> = {
      __ts: formatHlc(this.clock.tick()),
      __srcId: this.clientId,
      __protVer: '1.0',
    };
    if (fencingToken !== undefined) userProperties['__ft'] = typeof fencingToken === 'string' ? fencingToken : formatHlc(fencingToken);
    const options: IClientPublishOptions = {
      qos: 1,
      properties: { responseTopic: this.responseTopic, correlationData: correlation, userProperties, contentType: 'application/octet-stream' },
    };
    const result = new Promise<{ answer: RespValue; version: Hlc | undefined }>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new StateStoreError(`no answer from the state store within ${this.timeoutMs} ms`, 'timeout'));
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
    });
    this.mqtt.publish(INVOKE_TOPIC, encodeRequest(parts), options, (err) => {
      if (!err) return;
      const p = this.pending.get(id);
      if (!p) return;
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    });
    const outcome = await result;
    if (outcome.answer.type === 'error') throw new StateStoreError(outcome.answer.message, 'server');
    return outcome;
  }

  private handle(topic: string, payload: Buffer, props: { correlationData?: Buffer; userProperties?: Record<string, string | string[]> } | undefined): void {
    const tsProp = props?.userProperties?.['__ts'];
    const version = typeof tsProp === 'string' ? parseHlc(tsProp) : Array.isArray(tsProp) ? parseHlc(tsProp[0] ?? '') : undefined;
    if (version) this.clock.observe(version);
    if (topic === this.responseTopic) {
      const id = props?.correlationData ? Buffer.from(props.correlationData).toString('hex') : undefined;
      const p = id ? this.pending.get(id) : undefined;
      if (!p || !id) return;
      clearTimeout(p.timer);
      this.pending.delete(id);
      const answer = decodeAnswer(payload);
      if (!answer) p.reject(new StateStoreError(`malformed answer: ${JSON.stringify(payload.toString('latin1'))}`, 'protocol'));
      else p.resolve({ answer, version });
      return;
    }
    if (topic.startsWith(this.notifyPrefix)) {
      const key = Buffer.from(topic.slice(this.notifyPrefix.length), 'hex');
      const n = decodeAnswer(payload);
      if (!n || n.type !== 'array' || n.value.length < 2) return;
      const op = n.value[1];
      if (op?.type !== 'bulk' || !op.value) return;
      const operation = op.value.toString('latin1');
      if (operation === 'SET') {
        const v = n.value[3];
        this.emit('notification', { key, operation, value: v?.type === 'bulk' && v.value ? Buffer.from(v.value) : Buffer.alloc(0), version } satisfies KeyNotification);
      } else if (operation === 'DELETE') {
        this.emit('notification', { key, operation, version } satisfies KeyNotification);
      }
    }
  }

  /** Stop listening (the MQTT connection stays open; end it yourself). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new StateStoreError('the client is closed', 'closed'));
    }
    this.pending.clear();
    this.mqtt.off('message', this.onMessage);
    if (this.mqtt.connected) await this.mqtt.unsubscribeAsync([this.responseTopic, this.notifyFilter]).catch(() => undefined);
  }
}

function unexpected(answer: RespValue): StateStoreError {
  return new StateStoreError(`unexpected answer: ${JSON.stringify(answer)}`, 'protocol');
}
