/** The auth service's monotonic counts (metrics). */
export interface AuthCounters {
  loginsSucceeded: number;
  loginsFailed: number;
  loginsThrottled: number;
  /** Refused with 0x89 because too many password checks were already in progress. */
  loginsBusy: number;
  publishDenied: number;
  subscribeDenied: number;
  deliveryDenied: number;
  reloads: number;
  reloadErrors: number;
}

export function newAuthCounters(): AuthCounters {
  return {
    loginsSucceeded: 0,
    loginsFailed: 0,
    loginsThrottled: 0,
    loginsBusy: 0,
    publishDenied: 0,
    subscribeDenied: 0,
    deliveryDenied: 0,
    reloads: 0,
    reloadErrors: 0,
  };
}
