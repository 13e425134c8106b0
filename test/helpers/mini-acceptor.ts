/**
 * A tiny MQTT acceptor for transport tests: it parses with mqtt-packet and answers CONNECT,
 * SUBSCRIBE, PUBLISH (QoS 0 and 1), PINGREQ and DISCONNECT, routing QoS 0/1 publishes to
 * exact or "#"-suffixed subscriptions. It exists so the WebSocket adapters can be tested
 * with real clients on real sockets without the broker core; it is not a broker.
 *
 * It honours the Connection contract the way the broker must: when write() returns false
 * it stops writing to that connection, holds its packets, and resumes on onDrain.
 */
import mqttPacket from 'mqtt-packet';
import type { Connection, ConnectionAcceptor, ConnectionEvents } from '../../src/transport/connection.js';

interface Client {
  conn: Connection;
  id: string;
  version: 3 | 4 | 5;
  filters: string[];
  held: Buffer[];
  blocked: boolean;
}

export interface MiniAcceptor extends ConnectionAcceptor {
  readonly clients: Map<Connection, Client>;
  /** Connections seen, with what the transport reported about them. */
  readonly accepted: Connection[];
  /** Times a connection's write() returned false, and times onDrain came. */
  readonly counters: { blocked: number; drains: number; closes: number; bytesIn: number };
}

function matches(filter: string, topic: string): boolean {
  if (filter === '#') return true;
  if (filter.endsWith('/#')) return topic === filter.slice(0, -2) || topic.startsWith(filter.slice(0, -1));
  return filter === topic;
}

export function createMiniAcceptor(): MiniAcceptor {
  const clients = new Map<Connection, Client>();
  const accepted: Connection[] = [];
  const counters = { blocked: 0, drains: 0, closes: 0, bytesIn: 0 };

  function send(client: Client, packet: mqttPacket.Packet): void {
    const bytes = mqttPacket.generate(packet, { protocolVersion: client.version });
    if (client.blocked) {
      client.held.push(bytes);
      return;
    }
    if (!client.conn.write(bytes)) {
      client.blocked = true;
      counters.blocked++;
    }
  }

  return {
    clients,
    accepted,
    counters,
    accept(conn: Connection): ConnectionEvents {
      accepted.push(conn);
      let version: 3 | 4 | 5 = 4;
      const parser = mqttPacket.parser({ protocolVersion: 5 });
      let client: Client | undefined;
      parser.on('error', () => conn.destroy());
      parser.on('packet', (packet: mqttPacket.Packet) => {
        switch (packet.cmd) {
          case 'connect': {
            version = (packet.protocolVersion ?? 4) as 3 | 4 | 5;
            client = { conn, id: packet.clientId, version, filters: [], held: [], blocked: false };
            clients.set(conn, client);
            send(client, { cmd: 'connack', returnCode: 0, reasonCode: 0, sessionPresent: false } as mqttPacket.IConnackPacket);
            break;
          }
          case 'subscribe': {
            if (!client) return conn.destroy();
            for (const s of packet.subscriptions) client.filters.push(s.topic);
            send(client, {
              cmd: 'suback',
              messageId: packet.messageId!,
              granted: packet.subscriptions.map((s) => Math.min(s.qos, 1)),
            } as mqttPacket.ISubackPacket);
            break;
          }
          case 'publish': {
            if (!client) return conn.destroy();
            if (packet.qos === 1) send(client, { cmd: 'puback', messageId: packet.messageId! } as mqttPacket.IPubackPacket);
            for (const other of clients.values()) {
              if (other.filters.some((f) => matches(f, packet.topic))) {
                send(other, { cmd: 'publish', topic: packet.topic, payload: packet.payload, qos: 0, retain: false, dup: false } as mqttPacket.IPublishPacket);
              }
            }
            break;
          }
          case 'pingreq':
            if (client) send(client, { cmd: 'pingresp' });
            break;
          case 'disconnect':
            conn.close();
            break;
          default:
            break;
        }
      });
      return {
        onData(chunk: Buffer) {
          counters.bytesIn += chunk.length;
          parser.parse(chunk);
        },
        onDrain() {
          counters.drains++;
          if (!client) return;
          client.blocked = false;
          while (client.held.length > 0 && !client.blocked) {
            const bytes = client.held.shift()!;
            if (!conn.write(bytes)) {
              client.blocked = true;
              counters.blocked++;
            }
          }
        },
        onClose() {
          counters.closes++;
          clients.delete(conn);
        },
      };
    },
  };
}
