// Waiting in tests: a pause, and polling until a condition holds (or a deadline passes).

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` every `everyMs` until it returns a value other than undefined; throws after `ms`, naming `what`. */
export async function until<T>(what: string, ms: number, check: () => T | undefined | Promise<T | undefined>, everyMs = 250): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(everyMs);
  }
}
