// The state store's command logic, through the in-process harness (test/unit/state-harness.ts).
// The same protocol through a real broker and MQTT.js: test/e2e/state-*.test.ts.
import { describe, expect, it } from 'vitest';
import { Harness } from './state-harness.js';
import { encodeRequest } from '../../src/state/resp.js';
import { ERRORS, INVOKE_TOPIC, MAX_REGISTRATIONS_PER_CLIENT, notifyTopic, RESERVED_PREFIX } from '../../src/state/service.js';
import { parseHlc, formatHlc } from '../../src/state/hlc.js';

const raw = (h: Harness, parts: (string | Buffer)[] | Buffer, opts?: Parameters<Harness['request']>[1]) => h.request(parts, opts)!.payload.toString('latin1');

describe('state store service: answers, byte for byte', () => {
  it('SET, GET, DEL with the exact payloads and properties', () => {
    const h = new Harness();
    const set = h.request(['SET', 'k', 'v1'])!;
    expect(set.payload.toString('latin1')).toBe('+OK\r\n');
    expect(set.qos).toBe(1);
    expect(set.origin).toBe('state');
    expect(set.topic).toBe('clients/app/response');
    expect(set.properties?.contentType).toBe('application/octet-stream');
    expect(set.properties?.userProperties?.['__stat']).toBe('200');
    const setTs = set.properties?.userProperties?.['__ts'] as string;
    expect(setTs).toMatch(/^\d{15}:\d{5}:edb$/);

    const get = h.request(['GET', 'k'])!;
    expect(get.payload.toString('latin1')).toBe('$2\r\nv1\r\n');
    expect(get.properties?.userProperties?.['__ts']).toBe(setTs);
    const miss = h.request(['GET', 'nope'])!;
    expect(miss.payload.toString('latin1')).toBe('$-1\r\n');
    expect(miss.properties?.userProperties?.['__ts']).toBeUndefined();
    expect(miss.properties?.userProperties?.['__stat']).toBe('200');

    expect(raw(h, ['DEL', 'k'])).toBe(':1\r\n');
    expect(raw(h, ['DEL', 'k'])).toBe(':0\r\n');
  });

  it('NX and NEX answer :-1 when not applied', () => {
    const h = new Harness();
    expect(raw(h, ['SET', 'k', 'a', 'NX'])).toBe('+OK\r\n');
    expect(raw(h, ['SET', 'k', 'b', 'NX'])).toBe(':-1\r\n');
    expect(raw(h, ['SET', 'k', 'b', 'NEX'])).toBe(':-1\r\n');
    expect(raw(h, ['SET', 'k', 'a', 'NEX'])).toBe('+OK\r\n');
    expect(raw(h, ['GET', 'k'])).toBe('$1\r\na\r\n');
  });

  it('VDEL: :1 same value, :-1 other value, :0 absent', () => {
    const h = new Harness();
    h.request(['SET', 'k', 'a']);
    expect(raw(h, ['VDEL', 'k', 'b'])).toBe(':-1\r\n');
    expect(raw(h, ['VDEL', 'k', 'a'])).toBe(':1\r\n');
    expect(raw(h, ['VDEL', 'k', 'a'])).toBe(':0\r\n');
  });

  it('binary keys and values', () => {
    const h = new Harness();
    const key = Buffer.from([0, 0xff, 0x0d, 0x0a]);
    const value = Buffer.from([0x0d, 0x0a, 0, 0xfe]);
    expect(raw(h, ['SET', key, value])).toBe('+OK\r\n');
    expect(h.request(['GET', key])!.payload).toEqual(Buffer.concat([Buffer.from('$4\r\n'), value, Buffer.from('\r\n')]));
  });

  it('PX expires keys: lazily on access and by the sweep', () => {
    const h = new Harness();
    expect(raw(h, ['SET', 'k', 'v', 'PX', '100'])).toBe('+OK\r\n');
    expect(raw(h, ['SET', 'k2', 'v', 'NX', 'PX', '100'])).toBe('+OK\r\n');
    h.clock += 99;
    expect(raw(h, ['GET', 'k'])).toBe('$1\r\nv\r\n');
    h.clock += 1;
    expect(raw(h, ['GET', 'k'])).toBe('$-1\r\n');
    expect(h.service.table.size).toBe(1);
    expect(h.service.sweep()).toBe(1);
    expect(h.service.table.size).toBe(0);
    expect(h.service.metrics().expired).toBe(2);
  });

  it('every error, with its exact text', () => {
    const h = new Harness();
    const err = (m: string) => `-ERR ${m}\r\n`;
    expect(raw(h, Buffer.from('GET k'))).toBe(err(ERRORS.syntax));
    expect(raw(h, Buffer.from('*2\r\n$3\r\nGET\r\n$5\r\nk\r\n'))).toBe(err(ERRORS.syntax));
    expect(raw(h, Buffer.from('*2\r\n$3\r\nGET\r\n$1\r\nk\r\nextra'))).toBe(err(ERRORS.syntax));
    expect(raw(h, Buffer.from('*1\r\n$99999999999\r\n'))).toBe(err(ERRORS.syntax));
    expect(raw(h, Buffer.alloc(0))).toBe(err(ERRORS.syntax));
    expect(raw(h, ['FLUSHALL'])).toBe(err(ERRORS.unknownCommand));
    expect(raw(h, ['get', 'k'])).toBe(err(ERRORS.unknownCommand));
    expect(raw(h, ['GET'])).toBe(err(ERRORS.arity));
    expect(raw(h, ['GET', 'a', 'b'])).toBe(err(ERRORS.arity));
    expect(raw(h, ['SET', 'k'])).toBe(err(ERRORS.arity));
    expect(raw(h, ['DEL'])).toBe(err(ERRORS.arity));
    expect(raw(h, ['VDEL', 'k'])).toBe(err(ERRORS.arity));
    expect(raw(h, ['KEYNOTIFY'])).toBe(err(ERRORS.arity));
    expect(raw(h, ['KEYNOTIFY', 'k', 'STOP', 'x'])).toBe(err(ERRORS.arity));
    expect(raw(h, ['KEYNOTIFY', 'k', 'PAUSE'])).toBe(err(ERRORS.syntax));
    expect(raw(h, ['SET', 'k', 'v', 'XX'])).toBe(err(ERRORS.syntax));
    expect(raw(h, ['SET', 'k', 'v', 'NX', 'NEX'])).toBe(err(ERRORS.syntax));
    expect(raw(h, ['SET', 'k', 'v', 'PX'])).toBe(err(ERRORS.syntax));
    expect(raw(h, ['SET', 'k', 'v', 'PX', '0'])).toBe(err(ERRORS.syntax));
    expect(raw(h, ['SET', 'k', 'v', 'PX', '-5'])).toBe(err(ERRORS.syntax));
    expect(raw(h, ['SET', 'k', 'v', 'PX', '1e3'])).toBe(err(ERRORS.syntax));
    expect(raw(h, ['SET', 'k', 'v', 'PX', '10', 'PX', '10'])).toBe(err(ERRORS.syntax));
    expect(raw(h, ['SET', '', 'v'])).toBe(err(ERRORS.emptyKey));
    expect(raw(h, ['GET', ''])).toBe(err(ERRORS.emptyKey));
    expect(raw(h, ['SET', 'k', 'v'], { ts: null })).toBe(err(ERRORS.missingTimestamp));
    expect(raw(h, ['SET', 'k', 'v'], { ts: 'yesterday' })).toBe(err(ERRORS.malformedTimestamp));
    expect(raw(h, ['SET', 'k', 'v'], { ts: '12:x:n' })).toBe(err(ERRORS.malformedTimestamp));
    expect(raw(h, ['GET', 'k'], { ts: '12:3' })).toBe(err(ERRORS.malformedTimestamp));
    expect(raw(h, ['SET', 'k', 'v'], { ts: `${h.clock + 60_001}:0:n` })).toBe(err(ERRORS.timestampFuture));
    expect(raw(h, ['SET', 'k', 'v'], { ts: `${h.clock + 60_000}:0:n` })).toBe('+OK\r\n');
    expect(raw(h, ['SET', 'k', 'v'], { ft: `${h.clock + 60_001}:0:n` })).toBe(err(ERRORS.fencingFuture));
    expect(raw(h, ['SET', 'k', 'v'], { ft: 'nonsense' })).toBe(err(ERRORS.malformedTimestamp));
    // still alive: the next request works
    expect(raw(h, ['GET', 'k'])).toBe('$1\r\nv\r\n');
    const errors = h.service.metrics().errors;
    expect(errors[ERRORS.syntax]).toBeGreaterThanOrEqual(5);
    expect(errors[ERRORS.arity]).toBe(7);
  });

  it('accepts padded and unpadded timestamps; past ones are fine; GET needs none', () => {
    const h = new Harness();
    expect(raw(h, ['SET', 'a', '1'], { ts: '001696374425000:00000:node-a' })).toBe('+OK\r\n');
    expect(raw(h, ['SET', 'b', '1'], { ts: '1696374425000:0:node-a' })).toBe('+OK\r\n');
    expect(raw(h, ['GET', 'a'], { ts: null })).toBe('$1\r\n1\r\n');
  });

  it('quotas: max keys and max bytes', () => {
    const h = new Harness({ stateMaxKeys: 2, stateMaxBytes: 10 });
    expect(raw(h, ['SET', 'a', '1'])).toBe('+OK\r\n');
    expect(raw(h, ['SET', 'b', '1'])).toBe('+OK\r\n');
    expect(raw(h, ['SET', 'c', '1'])).toBe(`-ERR ${ERRORS.quota}\r\n`);
    expect(raw(h, ['SET', 'a', '123456789'])).toBe(`-ERR ${ERRORS.quota}\r\n`);
    expect(raw(h, ['SET', 'a', '1234567'])).toBe('+OK\r\n');
  });
});

describe('state store service: versions', () => {
  it('each write gets a version above the request and every earlier one', () => {
    const h = new Harness();
    const ahead = `${h.clock + 30_000}:7:client`;
    const a = h.ask(['SET', 'k', '1'], { ts: ahead });
    const va = parseHlc(a.ts!)!;
    expect(va.wall).toBe(h.clock + 30_000);
    expect(va.counter).toBe(8);
    const b = h.ask(['SET', 'k', '2'], { ts: `${h.clock - 5000}:0:x` });
    const vb = parseHlc(b.ts!)!;
    expect(formatHlc(vb) > formatHlc(va)).toBe(true);
    // GET hit carries the key's version; SET not applied carries the existing key's
    expect(h.ask(['GET', 'k']).ts).toBe(b.ts);
    expect(h.ask(['SET', 'k', '3', 'NX']).ts).toBe(b.ts);
    // DEL answers with the version of the delete, above the key's
    const d = h.ask(['DEL', 'k']);
    expect(d.ts! > b.ts!).toBe(true);
  });
});

describe('state store service: fencing tokens and the lease lock pattern', () => {
  it('acquire with NEX PX, fence a resource, refuse a stale holder', () => {
    const h = new Harness();
    const a = h.client('a');
    const b = h.client('b');
    const acquire = h.ask(['SET', 'lock', 'a', 'NEX', 'PX', '1000'], { client: a });
    expect(acquire).toMatchObject({ type: 'simple', value: 'OK' });
    const tokenA = acquire.ts!;
    expect(h.ask(['SET', 'lock', 'b', 'NEX', 'PX', '1000'], { client: b })).toMatchObject({ type: 'integer', value: -1 });
    expect(raw(h, ['SET', 'res', 'from-a'], { client: a, ft: tokenA })).toBe('+OK\r\n');
    expect(raw(h, ['SET', 'res', 'x'], { client: a })).toBe(`-ERR ${ERRORS.fencingRequired}\r\n`);
    expect(raw(h, ['DEL', 'res'], { client: a })).toBe(`-ERR ${ERRORS.fencingRequired}\r\n`);
    // a's lease runs out; b acquires and writes with its newer token
    h.clock += 1000;
    const tokenB = h.ask(['SET', 'lock', 'b', 'NEX', 'PX', '1000'], { client: b }).ts!;
    expect(raw(h, ['SET', 'res', 'from-b'], { client: b, ft: tokenB })).toBe('+OK\r\n');
    expect(raw(h, ['SET', 'res', 'late-a'], { client: a, ft: tokenA })).toBe(`-ERR ${ERRORS.fencingStale}\r\n`);
    expect(raw(h, ['VDEL', 'res', 'from-b'], { client: a, ft: tokenA })).toBe(`-ERR ${ERRORS.fencingStale}\r\n`);
    expect(raw(h, ['GET', 'res'])).toBe('$6\r\nfrom-b\r\n');
    // renew, release
    expect(raw(h, ['SET', 'lock', 'b', 'NEX', 'PX', '1000'], { client: b })).toBe('+OK\r\n');
    expect(raw(h, ['VDEL', 'lock', 'a'], { client: a })).toBe(':-1\r\n');
    expect(raw(h, ['VDEL', 'lock', 'b'], { client: b })).toBe(':1\r\n');
  });
});

describe('state store service: KEYNOTIFY', () => {
  it('notifies SET, DEL, VDEL and expiry on the client\'s notify topic', () => {
    const h = new Harness();
    const w = h.client('watcher');
    expect(raw(h, ['KEYNOTIFY', 'k'], { client: w })).toBe('+OK\r\n');
    const from = h.published.length;
    const set = h.ask(['SET', 'k', 'hello', 'PX', '50']);
    let n = h.notifications(from);
    expect(n).toHaveLength(1);
    expect(n[0]!.topic).toBe(`${RESERVED_PREFIX}/${Buffer.from('watcher').toString('hex').toUpperCase()}/command/notify/${Buffer.from('k').toString('hex').toUpperCase()}`);
    expect(n[0]!.topic).toBe(notifyTopic('watcher', Buffer.from('k')));
    expect(n[0]!.payload.toString('latin1')).toBe('*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$5\r\nhello\r\n');
    expect(n[0]!.qos).toBe(1);
    expect(n[0]!.properties?.userProperties?.['__ts']).toBe(set.ts);

    h.clock += 50;
    h.service.sweep();
    n = h.notifications(from);
    expect(n).toHaveLength(2);
    expect(n[1]!.payload.toString('latin1')).toBe('*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n');
    expect(n[1]!.properties?.userProperties?.['__ts'] as string > (set.ts as string)).toBe(true);

    h.request(['SET', 'k', 'x']);
    h.request(['VDEL', 'k', 'x']);
    h.request(['SET', 'k', 'y', 'PX', '10']);
    h.clock += 10;
    h.request(['GET', 'k']); // lazy expiry also notifies
    h.request(['SET', 'k', 'z']);
    h.request(['DEL', 'k']);
    h.request(['DEL', 'k']); // nothing changed: no notification
    h.request(['SET', 'other', 'z']);
    const kinds = h.notifications(from).slice(2).map((m) => (m.payload.toString('latin1').includes('DELETE') ? 'D' : 'S'));
    expect(kinds).toEqual(['S', 'D', 'S', 'D', 'S', 'D']);
  });

  it('caps the registrations one client may hold', () => {
    const h = new Harness();
    const w = h.client('greedy');
    for (let i = 0; i < MAX_REGISTRATIONS_PER_CLIENT; i++) expect(raw(h, ['KEYNOTIFY', `k${i}`], { client: w })).toBe('+OK\r\n');
    expect(raw(h, ['KEYNOTIFY', 'one-more'], { client: w })).toBe(`-ERR ${ERRORS.quota}\r\n`);
    expect(raw(h, ['KEYNOTIFY', 'k0'], { client: w })).toBe('+OK\r\n');
    expect(raw(h, ['KEYNOTIFY', 'one-more'], { client: h.client('other') })).toBe('+OK\r\n');
  });

  it('STOP ends a registration (:0 when none); disconnect ends all', () => {
    const h = new Harness();
    const w = h.client('w');
    expect(raw(h, ['KEYNOTIFY', 'k', 'STOP'], { client: w })).toBe(':0\r\n');
    expect(raw(h, ['KEYNOTIFY', 'k'], { client: w })).toBe('+OK\r\n');
    expect(raw(h, ['KEYNOTIFY', 'k'], { client: w })).toBe('+OK\r\n');
    expect(h.service.metrics().keyNotifyRegistrations).toBe(1);
    expect(raw(h, ['KEYNOTIFY', 'k', 'STOP'], { client: w })).toBe('+OK\r\n');
    let from = h.published.length;
    h.request(['SET', 'k', '1']);
    expect(h.notifications(from)).toHaveLength(0);
    h.request(['KEYNOTIFY', 'k'], { client: w });
    h.request(['KEYNOTIFY', 'j'], { client: w });
    h.disconnect(w);
    expect(h.service.metrics().keyNotifyRegistrations).toBe(0);
    from = h.published.length;
    h.request(['SET', 'k', '2']);
    h.request(['SET', 'j', '2']);
    expect(h.notifications(from)).toHaveLength(0);
  });
});

describe('state store service: requests and response topics', () => {
  it('no answer without a response topic or correlation data, yet consumed', () => {
    const h = new Harness();
    const c = h.client('a');
    expect(h.feed({ payload: encodeRequest(['SET', 'k', 'v']), properties: { correlationData: Buffer.from('x'), userProperties: { __ts: '1:0:a' } } }, c)).toBe(true);
    expect(h.feed({ payload: encodeRequest(['SET', 'k', 'v']), properties: { responseTopic: 'r/a', userProperties: { __ts: '1:0:a' } } }, c)).toBe(true);
    expect(h.published).toHaveLength(0);
    expect(h.service.table.size).toBe(0);
  });

  it('other topics pass through', () => {
    const h = new Harness();
    expect(h.feed({ topic: 'sensors/1', payload: Buffer.from('x') }, h.client('a'))).toBe(false);
    expect(h.feed({ topic: `${INVOKE_TOPIC}/x`, payload: Buffer.from('x') }, h.client('a'))).toBe(false);
  });

  it('disconnects a client that uses a forbidden response topic', async () => {
    const h = new Harness();
    for (const [i, topic] of [INVOKE_TOPIC, RESERVED_PREFIX, `${RESERVED_PREFIX}/AB/command/notify/01`, 'a/+/b'].entries()) {
      const c = h.client(`bad${i}`);
      h.feed({ payload: encodeRequest(['GET', 'k']), properties: { responseTopic: topic, correlationData: Buffer.from('x') } }, c);
    }
    await Promise.resolve();
    expect(h.disconnected.map((d) => d.clientId)).toEqual(['bad0', 'bad1', 'bad2', 'bad3']);
    expect(h.disconnected.every((d) => d.reasonCode === 0x82)).toBe(true);
    expect(h.published).toHaveLength(0);
  });

  it('drops a request whose response topic the client may not subscribe to', () => {
    const h = new Harness();
    const asked: string[] = [];
    h.maySubscribe = (client, filter) => {
      asked.push(`${client.clientId} ${filter}`);
      return client.clientId !== 'nosy';
    };
    expect(h.request(['SET', 'k', 'v'], { client: h.client('nosy') })).toBeUndefined();
    expect(h.service.table.size).toBe(0); // not executed either
    expect(h.service.metrics().errors['response topic not authorized']).toBe(1);
    expect(h.request(['SET', 'k', 'v'], { client: h.client('app') })?.payload.toString()).toBe('+OK\r\n');
    expect(asked).toEqual(['nosy clients/nosy/response', 'app clients/app/response']);
  });

  it('MQTT 3.1.1 clients get no service', () => {
    const h = new Harness();
    const c = h.client('old', { protocolVersion: 4 });
    expect(h.feed({ payload: encodeRequest(['SET', 'k', 'v']), properties: { responseTopic: 'r', correlationData: Buffer.from('x'), userProperties: { __ts: '1:0:a' } } }, c)).toBe(true);
    expect(h.published).toHaveLength(0);
  });
});

describe('state store service: authorization', () => {
  const sections = {
    stateStore: {
      authorization: {
        rules: [
          { clientId: 'sensor-*', access: 'readwrite', patterns: ['sensors/{clientId}/*'] },
          { access: 'read', keys: ['config'] },
          { username: 'admin', access: 'readwrite', patterns: ['*'] },
          { certificate: { CN: 'device-?' }, access: 'write', base64Keys: [Buffer.from([0, 1, 2]).toString('base64')] },
        ],
      },
    },
  };

  it('grants what the rules say and answers the rest "not authorized"', () => {
    const h = new Harness({ sections });
    const denied = `-ERR ${ERRORS.notAuthorized}\r\n`;
    const s1 = h.client('sensor-1');
    const admin = h.client('x', { username: 'admin' });
    const dev = h.client('d', { certificateFields: { CN: 'device-7' } });
    expect(raw(h, ['SET', 'sensors/sensor-1/t', '20'], { client: s1 })).toBe('+OK\r\n');
    expect(raw(h, ['GET', 'sensors/sensor-1/t'], { client: s1 })).toBe('$2\r\n20\r\n');
    expect(raw(h, ['SET', 'sensors/sensor-2/t', '20'], { client: s1 })).toBe(denied);
    expect(raw(h, ['SET', 'config', 'x'], { client: s1 })).toBe(denied);
    expect(raw(h, ['SET', 'config', 'x'], { client: admin })).toBe('+OK\r\n');
    expect(raw(h, ['GET', 'config'], { client: s1 })).toBe('$1\r\nx\r\n');
    expect(raw(h, ['KEYNOTIFY', 'config'], { client: s1 })).toBe('+OK\r\n');
    expect(raw(h, ['DEL', 'config'], { client: s1 })).toBe(denied);
    expect(raw(h, ['SET', Buffer.from([0, 1, 2]), 'v'], { client: dev })).toBe('+OK\r\n');
    expect(raw(h, ['GET', Buffer.from([0, 1, 2])], { client: dev })).toBe(denied);
    expect(raw(h, ['GET', 'anything'], { client: h.client('nobody') })).toBe(denied);
    // the client id is literal inside a pattern: glob characters in it match themselves
    const star = h.client('sensor-*');
    expect(raw(h, ['SET', 'sensors/sensor-1/t', '1'], { client: star })).toBe(denied);
    expect(raw(h, ['SET', 'sensors/sensor-*/t', '1'], { client: star })).toBe('+OK\r\n');
  });

  it('rejects a malformed authorization section at start', () => {
    expect(() => new Harness({ sections: { stateStore: { authorization: { rules: [{ access: 'all' }] } } } })).toThrow(/stateStore/);
    expect(() => new Harness({ sections: { stateStore: { bogus: 1 } } })).toThrow(/bogus/);
  });
});

describe('state store service: snapshot section', () => {
  it('saves and restores keys, versions, tokens and the clock', async () => {
    const h = new Harness();
    const v = h.ask(['SET', 'k', 'v']).ts;
    h.request(['SET', 'r', 'x'], { ft: `${h.clock}:0:a` });
    h.request(['SET', 'e', 'x', 'PX', '10']);
    const data = await h.service.snapshotSection().save();
    const h2 = new Harness();
    h2.clock = h.clock + 20;
    h2.service.snapshotSection().restore(data);
    expect(h2.ask(['GET', 'k']).ts).toBe(v);
    expect(raw(h2, ['GET', 'e'])).toBe('$-1\r\n');
    expect(raw(h2, ['SET', 'r', 'y'])).toBe(`-ERR ${ERRORS.fencingRequired}\r\n`);
    // a clock behind the restored versions still issues greater ones
    const h3 = new Harness();
    h3.clock = h.clock - 100_000;
    h3.service.snapshotSection().restore(data);
    expect(h3.ask(['SET', 'k', 'w']).ts! > v!).toBe(true);
    expect(() => h3.service.snapshotSection().restore(Buffer.from('junk'))).toThrow();
  });
});

describe('state store service: the Map table behaves the same', () => {
  it('runs the lease pattern on the Map reference', () => {
    const h = new Harness({}, { table: 'map' });
    expect(raw(h, ['SET', 'lock', 'a', 'NEX', 'PX', '10'])).toBe('+OK\r\n');
    expect(raw(h, ['SET', 'lock', 'b', 'NEX', 'PX', '10'])).toBe(':-1\r\n');
    expect(h.service.statusLine()).toMatch(/^State store: 1 of \d+ keys/);
  });
});
