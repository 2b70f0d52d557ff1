// How every long-running command stops: on SIGINT or SIGTERM (or after a time limit) it
// runs its stop once and resolves; a second signal exits at once with status 1.
import { log } from '../log.js';

export function untilSignal(stop: () => Promise<void>, o: { afterMs?: number } = {}): Promise<void> {
  return new Promise<void>((done) => {
    let stopping = false;
    const begin = (fields: Record<string, unknown>) => {
      stopping = true;
      log.info('stopping', fields);
      stop().then(
        () => {
          log.info('stopped');
          done();
        },
        (e) => {
          log.error('stop failed', { error: (e as Error).message });
          done();
        },
      );
    };
    const onSignal = (signal: string) => {
      if (stopping) {
        log.warn('second signal: exiting now', { signal });
        process.exit(1);
      }
      begin({ signal });
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    if (o.afterMs !== undefined && Number.isFinite(o.afterMs)) setTimeout(() => stopping || begin({ why: `${o.afterMs! / 1000} s elapsed` }), o.afterMs);
  });
}
