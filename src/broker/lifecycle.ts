/** Where a network connection is in its life: before CONNECT, waiting for the authentication hooks, open, closed. */
export type ClientState = 'new' | 'authenticating' | 'open' | 'closed';

/** Why a connection ended, for the will and the log. */
export type CloseCause = 'disconnect' | 'error' | 'keepalive' | 'protocol' | 'takeover' | 'shutdown' | 'admin' | 'timeout';
