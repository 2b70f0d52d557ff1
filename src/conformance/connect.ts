// Connecting to a backend whose listen backlog is full (EAGAIN: it has not accepted the last
// connections yet; qemu-storage-daemon's backlog is 1) is retried for a while, not failed.
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export const isEagain = (e: unknown): boolean => (e as NodeJS.ErrnoException)?.code === 'EAGAIN';

/** Runs `connect` until it does not fail with EAGAIN, at most `ms` (then the last error). */
export async function retryEagain<T>(connect: () => T | Promise<T>, ms = 3000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await connect();
    } catch (e) {
      if (!isEagain(e) || Date.now() > deadline) throw e;
      await sleep(5);
    }
  }
}
