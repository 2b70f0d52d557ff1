// Native objects handed to another thread by token (GuestMemory.park, Virtqueue.park): the
// token rides in a call to that thread, which claims it. When that call fails, the thread
// either never claimed it (it died, or refused the call first) or claimed it and let go;
// either way no one will claim it now, and a parked table or queue keeps the guest's
// memory mapped for the life of the process unless it is dropped.
import { addon } from './binding.js';

const raw = addon as { dropParked(token: number): void };

/** Forgets a parked object no thread will claim, releasing what it holds (a claimed or unknown token: nothing). */
export function dropParked(token: number): void {
  raw.dropParked(token);
}

/** `send(token)`, the call that hands a parked object over; if it fails, the object is dropped. */
export function handOver<T>(token: number, send: (token: number) => Promise<T>): Promise<T> {
  let sent: Promise<T>;
  try {
    sent = send(token);
  } catch (e) {
    dropParked(token);
    return Promise.reject(e as Error);
  }
  return sent.catch((e: unknown) => {
    dropParked(token);
    throw e;
  });
}
