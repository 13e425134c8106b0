import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqttPacket, { type IConnackPacket, type IDisconnectPacket } from 'mqtt-packet';
import { startBroker, until, type TestBroker } from '../helpers/broker.js';
import { RawClient } from '../helpers/raw.js';
import mqtt from 'mqtt';

let b: TestBroker;
beforeAll(async () => {
  b = await startBroker({ maxInflight: 20, topicAliasMaximum: 7, maxPacketSize: 100_000 });
});
afterAll(() => b.stop());

function connectBytes(version: 4 | 5 = 4, clientId = 'raw'): Buffer {
  return mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: 0, clientId }, { protocolVersion: version });
}

describe('CONNECT validation', () => {
  it('v5: CONNACK success with the broker limits as properties', async () => {
    const { client, connack } = await RawClient.connect(b.port, { clientId: 'v5-ok' });
    expect(connack.reasonCode).toBe(0);
    expect(connack.sessionPresent).toBe(false);
    expect(connack.properties).toMatchObject({
      receiveMaximum: 20,
      topicAliasMaximum: 7,
      maximumPacketSize: 100_000,
      retainAvailable: true,
      wildcardSubscriptionAvailable: true,
      subscriptionIdentifiersAvailable: true,
      sharedSubscriptionAvailable: true,
    });
    expect(connack.properties?.assignedClientIdentifier).toBeUndefined();
    expect(b.server.broker.client('v5-ok')?.protocolVersion).toBe(5);
    client.destroy();
  });

  it('3.1.1 and 3.1 (MQIsdp) clients are accepted', async () => {
    const v4 = await RawClient.connect(b.port, { clientId: 'v4-ok' }, 4);
    expect(v4.connack.returnCode).toBe(0);
    expect(v4.connack.sessionPresent).toBe(false);
    const v3 = await RawClient.connect(b.port, { clientId: 'v3-ok' }, 3);
    expect(v3.connack.returnCode).toBe(0);
    expect(b.server.broker.client('v3-ok')?.protocolVersion).toBe(3);
    v4.client.destroy();
    v3.client.destroy();
  });

  it('[MQTT-3.1.1-3.1.2-2] an unsupported protocol level gets CONNACK 0x01 and is closed', async () => {
    const c = await RawClient.open(b.port, 4);
    const bytes = connectBytes(4);
    expect(bytes[8]).toBe(4); // protocol level byte
    bytes[8] = 6;
    c.sendBytes(bytes);
    await c.waitClosed();
    expect(c.packets).toHaveLength(1);
    expect((c.packets[0] as IConnackPacket).returnCode).toBe(1);
    expect(b.server.broker.client('raw')).toBeUndefined();
  });

  it('[MQTT-5-3.1.2-1] a wrong protocol name is closed without CONNACK', async () => {
    const c = await RawClient.open(b.port, 4);
    const bytes = connectBytes(4);
    bytes.write('MQTX', 4, 'latin1');
    c.sendBytes(bytes);
    await c.waitClosed();
    expect(c.packets).toHaveLength(0);
  });

  it('[MQTT-5-3.1.2-3] the reserved connect flag must be 0', async () => {
    const c = await RawClient.open(b.port, 4);
    const bytes = connectBytes(4, 'reserved-flag');
    bytes[9]! |= 0x01;
    c.sendBytes(bytes);
    await c.waitClosed();
    expect(c.packets).toHaveLength(0);
    expect(b.server.broker.client('reserved-flag')).toBeUndefined();
  });

  /** A 3.1.1 CONNECT for client id "a" with the given flags, then `tail` (will, user name, password). */
  const connect4 = (flags: number, tail: number[]): number[] => {
    const body = [0, 4, 0x4d, 0x51, 0x54, 0x54, 4, flags, 0, 0, 0, 1, 0x61, ...tail];
    return [0x10, body.length, ...body];
  };

  it('[MQTT-3.1.1-3.1.2-14] will QoS 3 is malformed: 3.1.1 closed without CONNACK', async () => {
    const c = await RawClient.open(b.port, 4);
    c.sendBytes(connect4(0x1e, [0, 1, 0x74, 0, 1, 0x70])); // will flag, will QoS 3, clean
    await c.waitClosed();
    expect(c.packets).toHaveLength(0);
  });

  it('a property given twice in CONNECT is a protocol error: v5 CONNACK 0x82', async () => {
    // Session Expiry Interval 5, then 6 [MQTT-5-3.1.2.11.2]: a Protocol Error to include it more than once
    const bytes = Buffer.from([0x10, 0x18, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x05, 0x02, 0x00, 0x3c, 0x0a, 0x11, 0, 0, 0, 5, 0x11, 0, 0, 0, 6, 0x00, 0x01, 0x63]);
    const c = await RawClient.open(b.port, 5);
    c.sendBytes(bytes);
    const connack = await c.next<IConnackPacket>('connack');
    expect(connack.reasonCode).toBe(0x82);
    await c.waitClosed();
  });

  it('[MQTT-5-3.1.2-12] will QoS 3 is malformed: v5 CONNACK 0x81', async () => {
    const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'wq3', will: { topic: 't', payload: Buffer.from('p'), qos: 2, retain: false } }, { protocolVersion: 5 });
    expect(bytes[9]! & 0x18).toBe(0x10); // will QoS bits = 2
    bytes[9]! |= 0x18; // now 3
    const c = await RawClient.open(b.port, 5);
    c.sendBytes(bytes);
    const connack = await c.next<IConnackPacket>('connack');
    expect(connack.reasonCode).toBe(0x81);
    await c.waitClosed();
  });

  it('[MQTT-3.1.1-3.1.2-22] 3.1.1: a password without a user name is malformed', async () => {
    const c = await RawClient.open(b.port, 4);
    c.sendBytes(connect4(0x42, [0, 1, 0x70])); // password flag only
    await c.waitClosed();
    expect(c.packets).toHaveLength(0);
  });

  it('v5: a password without a user name is allowed', async () => {
    // mqtt-packet will not generate it, so by hand: level 5, flags clean + password, no properties
    const body = [0, 4, 0x4d, 0x51, 0x54, 0x54, 5, 0x42, 0, 0, 0, 0, 1, 0x61, 0, 1, 0x70];
    const client = await RawClient.open(b.port, 5);
    client.sendBytes([0x10, body.length, ...body]);
    const connack = await client.next<IConnackPacket>('connack');
    expect(connack.reasonCode).toBe(0);
    client.destroy();
  });

  it('[MQTT-5-3.1.0-1] the first packet must be CONNECT', async () => {
    const c = await RawClient.open(b.port, 4);
    c.send({ cmd: 'pingreq' });
    await c.waitClosed();
    expect(c.packets).toHaveLength(0);
  });

  it('[MQTT-3.1.1-3.1.3-8] 3.1.1: an empty client id with clean session 0 is refused with return code 2', async () => {
    // mqtt-packet refuses to generate this, so it is built by hand
    const client = await RawClient.open(b.port, 4);
    client.sendBytes([0x10, 12, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x00, 0, 0, 0, 0]);
    const connack = await client.next<IConnackPacket>('connack');
    expect(connack.returnCode).toBe(2);
    await client.waitClosed();
  });

  it('3.1.1: an empty client id with clean session 1 is accepted', async () => {
    const { client, connack } = await RawClient.connect(b.port, { clientId: '', clean: true }, 4);
    expect(connack.returnCode).toBe(0);
    await client.ping();
    client.destroy();
  });

  it('[MQTT-5-3.2.2-16] v5: an empty client id gets an Assigned Client Identifier', async () => {
    const { client, connack } = await RawClient.connect(b.port, { clientId: '' });
    expect(connack.reasonCode).toBe(0);
    const assigned = connack.properties?.assignedClientIdentifier;
    expect(assigned).toMatch(/^edb-[A-Za-z0-9_-]+$/);
    expect(b.server.broker.client(assigned!)?.clientId).toBe(assigned);
    const other = await RawClient.connect(b.port, { clientId: '' });
    expect(other.connack.properties?.assignedClientIdentifier).not.toBe(assigned);
    client.destroy();
    other.client.destroy();
  });

  it('MQTT.js v5 with an empty client id receives its assigned id in CONNACK', async () => {
    const c = mqtt.connect(b.url, { clientId: '', protocolVersion: 5, reconnectPeriod: 0 });
    const connack = await new Promise<IConnackPacket>((resolve, reject) => c.once('connect', resolve).once('error', reject));
    const assigned = connack.properties?.assignedClientIdentifier;
    expect(assigned).toMatch(/^edb-/);
    expect(b.server.broker.client(assigned!)).toBeDefined();
    await c.endAsync();
  });

  it('v5: Receive Maximum 0 in CONNECT is a protocol error (CONNACK 0x82)', async () => {
    const { client, connack } = await RawClient.connect(b.port, { clientId: 'rm0', properties: { receiveMaximum: 0 } });
    expect(connack.reasonCode).toBe(0x82);
    await client.waitClosed();
  });

  it('v5: an authentication method is refused with 0x8C (no enhanced auth)', async () => {
    const { client, connack } = await RawClient.connect(b.port, { clientId: 'auth-method', properties: { authenticationMethod: 'SCRAM-SHA-1' } });
    expect(connack.reasonCode).toBe(0x8c);
    await client.waitClosed();
    expect(b.server.broker.client('auth-method')).toBeUndefined();
  });

  it('v5: a will Response Topic with a wildcard is a protocol error (CONNACK 0x82)', async () => {
    const { client, connack } = await RawClient.connect(b.port, { clientId: 'bad-will-rt', will: { topic: 'w', payload: Buffer.from('x'), qos: 0, retain: false, properties: { responseTopic: 'r/#' } } });
    expect(connack.reasonCode).toBe(0x82);
    await client.waitClosed();
  });

  it('v5: an invalid will topic is refused with 0x90', async () => {
    const { client, connack } = await RawClient.connect(b.port, { clientId: 'bad-will', will: { topic: 'a/#', payload: Buffer.from('x'), qos: 0, retain: false } });
    expect(connack.reasonCode).toBe(0x90);
    await client.waitClosed();
  });
});

describe('CONNACK Session Present [MQTT-5-3.2.2]', () => {
  it('v5: reflects a stored session; Clean Start discards it', async () => {
    const first = await RawClient.connect(b.port, { clientId: 'sp5', clean: false, properties: { sessionExpiryInterval: 60 } });
    expect(first.connack.sessionPresent).toBe(false);
    first.client.send({ cmd: 'disconnect', reasonCode: 0 });
    await first.client.waitClosed();
    const second = await RawClient.connect(b.port, { clientId: 'sp5', clean: false, properties: { sessionExpiryInterval: 60 } });
    expect(second.connack.sessionPresent).toBe(true);
    second.client.send({ cmd: 'disconnect', reasonCode: 0 });
    await second.client.waitClosed();
    const third = await RawClient.connect(b.port, { clientId: 'sp5', clean: true, properties: { sessionExpiryInterval: 0 } });
    expect(third.connack.sessionPresent).toBe(false);
    third.client.send({ cmd: 'disconnect', reasonCode: 0 });
    await third.client.waitClosed();
    await until(() => !b.server.broker.sessions.has('sp5'), 1000, 'session sp5 to end');
  });

  it('3.1.1: clean session 0 keeps the session, 1 reports none [MQTT-3.1.1-3.2.2-1] to [MQTT-3.1.1-3.2.2-3]', async () => {
    const first = await RawClient.connect(b.port, { clientId: 'sp4', clean: false }, 4);
    expect(first.connack.sessionPresent).toBe(false);
    first.client.send({ cmd: 'disconnect' });
    await first.client.waitClosed();
    const second = await RawClient.connect(b.port, { clientId: 'sp4', clean: false }, 4);
    expect(second.connack.sessionPresent).toBe(true);
    second.client.send({ cmd: 'disconnect' });
    await second.client.waitClosed();
    const third = await RawClient.connect(b.port, { clientId: 'sp4', clean: true }, 4);
    expect(third.connack.sessionPresent).toBe(false);
    third.client.destroy();
  });
});

describe('a second CONNECT [MQTT-5-3.1.0-2]', () => {
  it('v5: DISCONNECT 0x82 and close', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: 'twice5' });
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'twice5' });
    const d = await client.next<IDisconnectPacket>('disconnect');
    expect(d.reasonCode).toBe(0x82);
    await client.waitClosed();
    expect(client.all('connack')).toHaveLength(1);
    expect(b.server.broker.stats.protocolErrors['protocol_error']).toBeGreaterThan(0);
  });

  it('3.1.1: close without reply', async () => {
    const { client } = await RawClient.connect(b.port, { clientId: 'twice4' }, 4);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 0, clientId: 'twice4' });
    await client.waitClosed();
    expect(client.packets.map((p) => p.cmd)).toEqual(['connack']);
  });
});

describe('CONNECT timeout (connectTimeoutMs)', () => {
  // its own broker: a short timeout on the shared one could close slow test clients under load
  let t: TestBroker;
  beforeAll(async () => {
    t = await startBroker({ connectTimeoutMs: 300 });
  });
  afterAll(() => t.stop());

  it('a socket that sends nothing is closed', async () => {
    const c = await RawClient.open(t.port);
    const opened = Date.now();
    await c.waitClosed(2500);
    expect(Date.now() - opened).toBeGreaterThanOrEqual(250);
    expect(c.packets).toHaveLength(0);
  });

  it('a half-sent CONNECT is also timed out', async () => {
    const c = await RawClient.open(t.port);
    c.sendBytes(connectBytes(5).subarray(0, 5));
    await c.waitClosed(2500);
    expect(c.packets).toHaveLength(0);
  });
});

describe('maxConnections', () => {
  it('refuses connections over the limit; the others keep working', async () => {
    const small = await startBroker({ maxConnections: 2 });
    try {
      const a = await RawClient.connect(small.port, { clientId: 'a' });
      const c2 = await RawClient.connect(small.port, { clientId: 'b' });
      const extra = await RawClient.open(small.port);
      extra.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 0, clientId: 'c' });
      await extra.waitClosed();
      expect(extra.packets).toHaveLength(0);
      expect(small.server.broker.stats.dropped['connection_refused']).toBe(1);
      await a.client.ping();
      await c2.client.ping();
      // a slot frees when a client leaves
      a.client.send({ cmd: 'disconnect', reasonCode: 0 });
      await a.client.waitClosed();
      await until(() => small.server.broker.connections.size < 2, 2000, 'the slot to free');
      const again = await RawClient.connect(small.port, { clientId: 'c' });
      expect(again.connack.reasonCode).toBe(0);
      again.client.destroy();
      c2.client.destroy();
    } finally {
      await small.stop();
    }
  });
});
