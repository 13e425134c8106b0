/**
 * Bounds the password checks in progress. Each check is a deliberately slow scrypt on
 * libuv's thread pool (4 threads, shared with fs and dns); without a bound, a flood of
 * CONNECTs with made-up users would queue minutes of hashing and starve everything else
 * that needs the pool, including logins of real users. So: at most `maxConcurrent` checks
 * run at once, at most `maxWaiting` wait, and a check still waiting at its deadline (the
 * CONNECT timeout, after which the broker has closed that connection anyway) is dropped
 * without hashing. Callers answer 'busy' / 'expired' with 0x89 Server busy.
 */
export type QueueVerdict = 'busy' | 'expired';

interface Waiting {
  start: () => void;
  deadline: number;
  expire: () => void;
}

export class VerifyQueue {
  private running = 0;
  private readonly waiting: Waiting[] = [];

  constructor(
    private readonly maxConcurrent: number,
    private readonly maxWaiting: number,
    private readonly now: () => number = Date.now,
  ) {}

  get active(): number {
    return this.running;
  }

  get queued(): number {
    return this.waiting.length;
  }

  run<T>(task: () => Promise<T>, deadline: number): Promise<T | QueueVerdict> {
    if (this.running < this.maxConcurrent) return this.start(task);
    if (this.waiting.length >= this.maxWaiting) return Promise.resolve('busy');
    return new Promise<T | QueueVerdict>((resolve, reject) => {
      this.waiting.push({
        deadline,
        start: () => this.start(task).then(resolve, reject),
        expire: () => resolve('expired'),
      });
    });
  }

  private start<T>(task: () => Promise<T>): Promise<T> {
    this.running++;
    let p: Promise<T>;
    try {
      p = task();
    } catch (err) {
      p = Promise.reject(err);
    }
    return p.finally(() => {
      this.running--;
      this.next();
    });
  }

  private next(): void {
    const now = this.now();
    while (this.running < this.maxConcurrent && this.waiting.length > 0) {
      const w = this.waiting.shift()!;
      if (w.deadline <= now) w.expire();
      else w.start();
    }
  }
}
