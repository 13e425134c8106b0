/**
 * The invoke topic: requests are consumed in the broker's onPublish hook (never routed to
 * subscribers), checked for an answerable response topic, run synchronously, and answered
 * with broker.publish (origin "state") on the client's response topic.
 */
import type { BrokerApi } from '../broker/api.js';
import type { ClientInfo } from '../broker/hooks.js';
import type { Message, UserProperties } from '../mqtt/message.js';
import { RC } from '../mqtt/reason-codes.js';
import { isValidTopicName } from '../topics/validate.js';
import type { StateStoreAuthorizer } from './authorization.js';
import { executeRequest } from './commands.js';
import type { Answer } from './counters.js';
import { formatHlc } from './hlc.js';
import type { StateKeyspace } from './keyspace.js';
import { CONTENT_TYPE, ERRORS, INVOKE_TOPIC, RESERVED_PREFIX } from './protocol.js';
import { parseRequest } from './request.js';

export class InvokeHandler {
  constructor(
    private readonly broker: BrokerApi,
    private readonly space: StateKeyspace,
    private readonly authorizer: StateStoreAuthorizer,
  ) {}

  /** The onPublish hook: true when the message was a request (consumed), false for any other topic. */
  onPublish(message: Message, client: ClientInfo | undefined): boolean {
    if (message.topic !== INVOKE_TOPIC) return false;
    const { broker, space } = this;
    const log = space.log;
    if (!client || client.protocolVersion !== 5) {
      // the protocol is MQTT 5 only; without a client there is no one to answer or authorize
      log.debug({ sender: message.senderId, origin: message.origin }, 'state store: request not from an MQTT 5 client; dropped');
      return true;
    }
    const props = message.properties;
    const responseTopic = props?.responseTopic;
    const correlationData = props?.correlationData;
    if (responseTopic === undefined || correlationData === undefined) {
      space.counters.count('no response topic or correlation data');
      return true;
    }
    if (!isValidTopicName(responseTopic) || responseTopic === INVOKE_TOPIC || responseTopic === RESERVED_PREFIX || responseTopic.startsWith(`${RESERVED_PREFIX}/`)) {
      space.counters.count('forbidden response topic');
      log.info({ clientId: client.clientId, responseTopic }, 'state store: forbidden response topic; disconnecting the client');
      const id = client.clientId;
      // not from inside the broker's publish flow
      queueMicrotask(() => broker.disconnectClient(id, RC.PROTOCOL_ERROR, 'state store: response topic not allowed'));
      return true;
    }
    // [state-store: Requests] the response topic must be one the client may subscribe to:
    // otherwise the broker would publish, in the client's name, where it may not listen.
    // Nobody to answer: the request is dropped and counted.
    if (!broker.maySubscribe(client, responseTopic)) {
      space.counters.count('response topic not authorized');
      log.debug({ clientId: client.clientId, responseTopic }, 'state store: the client may not subscribe to its response topic; request dropped');
      return true;
    }
    const answer = this.compute(message.payload, client, props?.userProperties);
    const pending = space.pending;
    space.pending = undefined;
    if (pending && answer.stored) {
      // cluster mode: answered once the write is replicated
      const again = (): Answer => this.compute(message.payload, client, props?.userProperties);
      void this.whenReplicated(pending, answer, again).then((final) => this.reply(final, responseTopic, correlationData));
      return true;
    }
    this.reply(answer, responseTopic, correlationData, client);
    return true;
  }

  /** Cluster mode: the answer once replicated; a conflict (another node wrote the key first) runs the request again, a few times. */
  private async whenReplicated(pending: Promise<'ok' | 'conflict'>, answer: Answer, compute: () => Answer): Promise<Answer> {
    const { space } = this;
    for (let attempt = 0; attempt < 8; attempt++) {
      let outcome: 'ok' | 'conflict';
      try {
        outcome = await pending;
      } catch (err) {
        space.log.warn({ err: (err as Error).message }, 'state store: a write could not be replicated; answered with an error');
        return space.counters.error(ERRORS.clusterUnavailable);
      }
      if (outcome === 'ok') return answer;
      answer = compute();
      const next = space.pending;
      space.pending = undefined;
      if (!next || !answer.stored) return answer; // refused now (NX on a key another node set, say)
      pending = next;
    }
    return space.counters.error(ERRORS.clusterUnavailable);
  }

  private reply(answer: Answer, responseTopic: string, correlationData: Buffer, client?: ClientInfo): void {
    const { broker, space } = this;
    const log = space.log;
    const userProperties: UserProperties = { __stat: '200' };
    if (answer.version) userProperties['__ts'] = formatHlc(answer.version);
    const reply = {
      topic: responseTopic,
      payload: answer.payload,
      qos: 1 as const,
      retain: false,
      properties: { correlationData, contentType: CONTENT_TYPE, userProperties },
      origin: 'state',
    };
    const storage = space.durable?.storage;
    if (!answer.stored || !storage || space.replica) broker.publish(reply);
    else {
      // [durable] the answer says OK only once the write is on disk
      storage.onDurable((err) => {
        if (err) {
          log.error({ err: err.message, clientId: client?.clientId }, 'state store: a write could not be stored; answered with an error');
          reply.payload = space.counters.error(ERRORS.quota).payload;
          delete userProperties['__ts'];
        }
        broker.publish(reply);
      });
    }
  }

  /** The request's answer; a bug here must not take the connection or the broker down. */
  private compute(payload: Buffer, client: ClientInfo, props: UserProperties | undefined): Answer {
    try {
      return this.answer(payload, client, props);
    } catch (err) {
      this.space.log.error({ err: (err as Error).message, clientId: client.clientId }, 'state store: request failed');
      this.space.pending = undefined;
      return this.space.counters.error(ERRORS.syntax);
    }
  }

  private answer(payload: Buffer, client: ClientInfo, props: UserProperties | undefined): Answer {
    const parsed = parseRequest(payload);
    if (!parsed.ok) {
      this.space.counters.op(parsed.op);
      return this.space.counters.error(parsed.error);
    }
    this.space.counters.op(parsed.request.verb);
    return executeRequest(this.space, this.authorizer, parsed.request, client, props);
  }
}
