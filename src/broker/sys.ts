import type { Broker } from './broker.js';

/**
 * `$SYS/broker/...` topics in the style of mosquitto's, published retained every
 * `sysInterval` seconds (only values that changed are published again).
 */
export function startSysTopics(broker: Broker, version: string, intervalSeconds: number): () => void {
  if (intervalSeconds <= 0) return () => undefined;
  const last = new Map<string, string>();
  const publish = (topic: string, value: string | number): void => {
    const text = String(value);
    if (last.get(topic) === text) return;
    last.set(topic, text);
    broker.publish({ topic: `$SYS/broker/${topic}`, payload: Buffer.from(text), qos: 0, retain: true, origin: '$SYS' });
  };
  const tick = (): void => {
    const s = broker.stats;
    const mem = process.memoryUsage();
    publish('version', `edge-data-broker ${version}`);
    publish('uptime', `${Math.floor((Date.now() - s.startedAt) / 1000)} seconds`);
    publish('clients/connected', s.clientsConnected);
    publish('clients/total', broker.sessions.size);
    publish('clients/disconnected', broker.sessions.size - s.clientsConnected);
    publish('clients/maximum', broker.config.maxConnections);
    publish('messages/received', s.messagesReceived);
    publish('messages/sent', s.messagesSent);
    publish('publish/messages/received', s.publishReceived);
    publish('publish/messages/sent', s.publishSent);
    publish('publish/messages/dropped', Object.values(s.dropped).reduce((a, b) => a + b, 0));
    publish('bytes/received', s.bytesReceived);
    publish('bytes/sent', s.bytesSent);
    publish('retained messages/count', broker.retainedCount());
    publish('subscriptions/count', broker.subscriptionCount());
    publish('store/messages/count', broker.queuedMessages());
    publish('heap/current', mem.heapUsed);
  };
  tick();
  const timer = setInterval(tick, intervalSeconds * 1000);
  timer.unref();
  return () => clearInterval(timer);
}
