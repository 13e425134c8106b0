/**
 * Opens the listeners that come on with settings: MQTT over TLS (EDB_MQTTS_PORT), over
 * WebSocket (EDB_WS_PORT, -1 turns it off) and over secure WebSocket (EDB_WSS_PORT).
 * MQTTS and WSS are on when EDB_TLS_CERT and EDB_TLS_KEY are set. The TCP listener is
 * opened by the server itself.
 */
import type { Logger } from 'pino';
import type { Config } from '../config/schema.js';
import type { ConnectionAcceptor, Listener } from './connection.js';
import { startTlsListener } from './tcp.js';
import { loadTlsOptions } from './tls-options.js';
import type { WsEngineSetting } from './uws.js';
import { startWebSocketListener } from './websocket.js';

/** Throws ConfigError for unusable TLS settings before anything is opened; closes what it opened if one fails. */
export async function startTlsAndWebSocketListeners(acceptor: ConnectionAcceptor, config: Config, log: Logger): Promise<Listener[]> {
  const tls = loadTlsOptions(config);
  const opened: Listener[] = [];
  const common = {
    host: config.host,
    engine: config.wsEngine as WsEngineSetting,
    acceptor,
    log,
    maxPacketSize: config.maxPacketSize,
    // A graceful stop lets the broker say goodbye to each client first.
    closeTimeoutMs: config.shutdownTimeoutMs + 1000,
  };
  try {
    if (tls && config.mqttsPort >= 0) {
      const { files: _files, ...tlsOptions } = tls;
      const mqtts = await startTlsListener(acceptor, config.host, config.mqttsPort, tlsOptions);
      log.info({ listener: mqtts.name, engine: mqtts.engine, port: mqtts.port, clientCertificates: tls.requestCert }, `MQTT over TLS on port ${mqtts.port}`);
      opened.push(mqtts);
    }
    if (config.wsPort >= 0) opened.push(await startWebSocketListener({ ...common, name: 'ws', port: config.wsPort }));
    if (tls && config.wssPort >= 0) opened.push(await startWebSocketListener({ ...common, name: 'wss', port: config.wssPort, tls }));
  } catch (err) {
    await Promise.all(opened.map((l) => l.close()));
    throw err;
  }
  return opened;
}
