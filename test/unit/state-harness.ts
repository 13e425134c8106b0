// A thin in-process stand-in for the broker, for unit tests of the state store's command
// logic only: it keeps the hooks the service registers, feeds them requests and records
// what the service publishes. The protocol tests over real MQTT are in test/e2e/.
import type { BrokerApi } from '../../src/broker/api.js';
import type { BrokerHooks, ClientInfo } from '../../src/broker/hooks.js';
import type { Message, UserProperties } from '../../src/mqtt/message.js';
import { testConfig } from '../../src/config/load.js';
import type { Config } from '../../src/config/schema.js';
import { silentLogger } from '../../src/log.js';
import { encodeRequest, decodeAnswer, type RespValue } from '../../src/state/resp.js';
import { createStateStoreService, INVOKE_TOPIC, type StateStoreService, type StateStoreOptions } from '../../src/state/service.js';

export class Harness {
  readonly hooks: BrokerHooks[] = [];
  readonly published: Message[] = [];
  readonly disconnected: { clientId: string; reasonCode: number }[] = [];
  readonly service: StateStoreService;
  clock = 1_700_000_000_000;
  /** What the broker's authorizeSubscribe hooks would say (tests replace it). */
  maySubscribe: (client: ClientInfo, filter: string) => boolean = () => true;

  constructor(overrides: Partial<Config> = {}, options: StateStoreOptions = {}) {
    const config = testConfig({ stateSweepIntervalMs: 1_000_000, ...overrides });
    const broker = {
      config,
      log: silentLogger(),
      addHooks: (h: BrokerHooks) => this.hooks.push(h),
      publish: (m: Message) => {
        for (const h of this.hooks) if (h.onPublish?.(m, undefined)) return;
        this.published.push(m);
      },
      maySubscribe: (client: ClientInfo, filter: string) => this.maySubscribe(client, filter),
      disconnectClient: (clientId: string, reasonCode: number) => {
        this.disconnected.push({ clientId, reasonCode });
        return true;
      },
    } as unknown as BrokerApi;
    this.service = createStateStoreService(broker, config, silentLogger(), { now: () => this.clock, ...options });
  }

  client(clientId: string, extra: Partial<ClientInfo> = {}): ClientInfo {
    return { clientId, username: undefined, protocolVersion: 5, transport: 'tcp', remoteAddress: '127.0.0.1:1', connectedAt: 0, ...extra };
  }

  /** Feed a raw message as if a client published it; returns whether it was consumed. */
  feed(message: Partial<Message> & { payload: Buffer }, client: ClientInfo): boolean {
    const m: Message = { topic: INVOKE_TOPIC, qos: 1, retain: false, senderId: client.clientId, ...message };
    for (const h of this.hooks) if (h.onPublish?.(m, client)) return true;
    return false;
  }

  /** Send a request; returns the raw answer message (or undefined when none). */
  request(parts: (string | Buffer)[] | Buffer, opts: { client?: ClientInfo; ts?: string | null; ft?: string; props?: UserProperties } = {}): Message | undefined {
    const client = opts.client ?? this.client('app');
    const userProperties: UserProperties = { ...(opts.props ?? {}) };
    if (opts.ts !== null) userProperties['__ts'] = opts.ts ?? `${this.clock}:0:${client.clientId}`;
    if (opts.ft !== undefined) userProperties['__ft'] = opts.ft;
    const before = this.published.length;
    const correlationData = Buffer.from(`c${before}-${Math.random()}`);
    this.feed(
      {
        payload: Buffer.isBuffer(parts) ? parts : encodeRequest(parts),
        properties: { responseTopic: `clients/${client.clientId}/response`, correlationData, userProperties },
      },
      client,
    );
    const answer = this.published.slice(before).find((m) => m.properties?.correlationData?.equals(correlationData));
    return answer;
  }

  /** Send a request and decode the answer. */
  ask(parts: (string | Buffer)[] | Buffer, opts: Parameters<Harness['request']>[1] = {}): RespValue & { ts?: string } {
    const m = this.request(parts, opts);
    if (!m) throw new Error('no answer');
    const v = decodeAnswer(m.payload);
    if (!v) throw new Error(`undecodable answer ${m.payload.toString('latin1')}`);
    const ts = m.properties?.userProperties?.['__ts'];
    return { ...v, ts: typeof ts === 'string' ? ts : undefined };
  }

  /** Notifications published since index `from`. */
  notifications(from = 0): Message[] {
    return this.published.slice(from).filter((m) => m.topic.includes('/command/notify/'));
  }

  disconnect(client: ClientInfo): void {
    for (const h of this.hooks) h.onDisconnect?.(client, true);
  }
}
