// A bare Node TCP server that answers the Redis bench client's SET/GET with canned replies:
// the floor cost of one small request and answer through Node's net stack. Used by
// `FLOOR=1 node dist/bench/state/rtt.js` in place of redis-server.
import { createServer } from 'node:net';

const value = Buffer.alloc(100, 0x76);
const getReply = Buffer.concat([Buffer.from('$100\r\n'), value, Buffer.from('\r\n')]);
const ok = Buffer.from('+OK\r\n');
// FLOOR_CORK=1: answer as the broker writes, two writes corked until the next tick (writev)
const cork = process.env['FLOOR_CORK'] === '1';
const empty = Buffer.alloc(0);
const server = createServer({ noDelay: true }, (socket) => {
  // "*3\r\n$3\r\nSET..." or "*2\r\n$3\r\nGET...": the verb starts at byte 8
  socket.on('data', (d: Buffer) => {
    const reply = d[8] === 0x53 ? ok : getReply;
    if (!cork) return void socket.write(reply);
    socket.cork();
    socket.write(reply.subarray(0, 2));
    socket.write(reply.subarray(2));
    socket.write(empty);
    process.nextTick(() => socket.uncork());
  });
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${(server.address() as { port: number }).port}\n`);
});
