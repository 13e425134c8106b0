/**
 * Authorization by the ACL (EDB_ACL_FILE and/or the config file's `acl` section), checked on
 * PUBLISH (incl. will and retained), SUBSCRIBE (per filter) and each delivery; without an ACL
 * everything is allowed. Synchronous: it runs on the publish and delivery paths, so each
 * client's compiled view of the ACL (ClientAcl) is cached until a reload or a reconnect.
 */
import type { Logger } from 'pino';
import type { ClientInfo } from '../broker/hooks.js';
import type { Message, QoS } from '../mqtt/message.js';
import { RC } from '../mqtt/reason-codes.js';
import { ClientAcl } from './acl.js';
import type { AuthCounters } from './counters.js';
import type { AuthRules } from './rules-source.js';

export class TopicAuthorizer {
  private readonly clientAcls = new Map<string, ClientAcl>();
  /** Bumped on each reload: cached views of an older ACL are rebuilt. */
  private generation = 0;

  constructor(
    private readonly rules: () => AuthRules,
    private readonly counters: AuthCounters,
    private readonly log: Logger,
  ) {}

  /** The client's view of the ACL; null without an ACL (everything allowed). */
  aclFor(client: { clientId: string; username: string | undefined }): ClientAcl | null {
    const acl = this.rules().acl;
    if (!acl) return null;
    const cached = this.clientAcls.get(client.clientId);
    if (cached && cached.generation === this.generation && cached.username === client.username) return cached;
    const fresh = new ClientAcl(acl, client.clientId, client.username, this.generation);
    this.clientAcls.set(client.clientId, fresh);
    return fresh;
  }

  /** The client connected or left: its cached view is dropped. */
  forget(clientId: string): void {
    this.clientAcls.delete(clientId);
  }

  /** New rules are in force. */
  rulesChanged(): void {
    this.generation++;
    this.clientAcls.clear();
  }

  /** The authorizePublish hook: 0 or 0x87 Not authorized. */
  authorizePublish(client: ClientInfo, message: Message): number {
    const acl = this.aclFor(client);
    if (!acl || acl.canWrite(message.topic)) return 0;
    this.counters.publishDenied++;
    this.log.debug({ clientId: client.clientId, username: client.username, topic: message.topic }, 'publish denied');
    return RC.NOT_AUTHORIZED;
  }

  /** The authorizeSubscribe hook: the granted QoS or 0x87 Not authorized. */
  authorizeSubscribe(client: ClientInfo, filter: string, qos: QoS): number {
    const acl = this.aclFor(client);
    if (!acl || acl.canSubscribe(filter)) return qos;
    this.counters.subscribeDenied++;
    this.log.debug({ clientId: client.clientId, username: client.username, filter }, 'subscribe denied');
    return RC.NOT_AUTHORIZED;
  }

  /** The authorizeDelivery hook. */
  authorizeDelivery(client: ClientInfo, message: Message): boolean {
    const acl = this.aclFor(client);
    if (!acl || acl.canRead(message.topic)) return true;
    this.counters.deliveryDenied++;
    return false;
  }
}
