import { describe, expect, it } from 'vitest';
import { VerifyQueue } from '../../src/auth/verify-queue.js';

function deferred(): { promise: Promise<boolean>; resolve: (v: boolean) => void } {
  let resolve!: (v: boolean) => void;
  const promise = new Promise<boolean>((r) => (resolve = r));
  return { promise, resolve };
}

describe('VerifyQueue', () => {
  it('runs at most maxConcurrent tasks, queues up to maxWaiting, refuses the rest as busy', async () => {
    let now = 0;
    const q = new VerifyQueue(2, 2, () => now);
    const tasks = Array.from({ length: 5 }, deferred);
    let started = 0;
    const results = tasks.map((t) =>
      q.run(() => {
        started++;
        return t.promise;
      }, 1000),
    );
    expect(started).toBe(2);
    expect(q.active).toBe(2);
    expect(q.queued).toBe(2);
    expect(await results[4]).toBe('busy');
    tasks[0]!.resolve(true);
    expect(await results[0]).toBe(true);
    expect(started).toBe(3); // the first waiting one started
    tasks[1]!.resolve(false);
    tasks[2]!.resolve(true);
    expect(await results[1]).toBe(false);
    expect(await results[2]).toBe(true);
    expect(started).toBe(4);
    tasks[3]!.resolve(true);
    expect(await results[3]).toBe(true);
    expect(q.active).toBe(0);
  });

  it('drops a waiting task whose deadline passed, without running it', async () => {
    let now = 0;
    const q = new VerifyQueue(1, 10, () => now);
    const first = deferred();
    const r1 = q.run(() => first.promise, 100);
    let ran = false;
    const r2 = q.run(async () => {
      ran = true;
      return true;
    }, 50);
    now = 60;
    first.resolve(true);
    expect(await r1).toBe(true);
    expect(await r2).toBe('expired');
    expect(ran).toBe(false);
  });

  it('passes errors through and keeps going', async () => {
    const q = new VerifyQueue(1, 10);
    await expect(q.run(() => Promise.reject(new Error('boom')), Date.now() + 1000)).rejects.toThrow('boom');
    await expect(
      q.run(() => {
        throw new Error('sync boom');
      }, Date.now() + 1000),
    ).rejects.toThrow('sync boom');
    expect(await q.run(async () => 7, Date.now() + 1000)).toBe(7);
  });
});
