/**
 * A fake clock for tests, in the manner of std's `FakeTime` (which needs
 * JSR): while it is in use, `setTimeout`/`clearTimeout` are replaced by
 * timers that only fire when the test calls {@linkcode FakeTime.tick}, so
 * timing behaviour (Happy Eyeballs' delays) is checked exactly, without
 * wall-clock windows. Real I/O still runs; `tick` lets it settle between
 * timers with a real macrotask.
 *
 * @module
 */

interface Timer {
  id: number;
  at: number;
  seq: number;
  fn: () => void;
}

/** Replaces the global timers until disposed. */
export class FakeTime implements Disposable {
  #now = 0;
  #seq = 0;
  #timers = new Map<number, Timer>();
  #realSetTimeout = globalThis.setTimeout;
  #realClearTimeout = globalThis.clearTimeout;

  constructor() {
    const fake = (fn: () => void, ms = 0): number => {
      const id = ++this.#seq;
      const delay = Number.isFinite(ms) && ms > 0 ? ms : 0;
      this.#timers.set(id, { id, at: this.#now + delay, seq: id, fn });
      return id;
    };
    globalThis.setTimeout = fake as unknown as typeof setTimeout;
    globalThis.clearTimeout = ((id?: number) => {
      if (id !== undefined) this.#timers.delete(id);
    }) as typeof clearTimeout;
  }

  /** Fake milliseconds since the clock was made. */
  get now(): number {
    return this.#now;
  }

  /** Lets promise chains and pending real I/O settle. */
  async #settle(): Promise<void> {
    for (let i = 0; i < 3; i++) {
      await new Promise((ok) => this.#realSetTimeout(ok, 0));
    }
  }

  /**
   * Advances the clock by `ms`, firing every timer due on the way, in
   * order, each at its own time.
   */
  async tick(ms: number): Promise<void> {
    const target = this.#now + ms;
    await this.#settle();
    while (true) {
      let next: Timer | undefined;
      for (const t of this.#timers.values()) {
        if (t.at > target) continue;
        if (
          next === undefined || t.at < next.at ||
          (t.at === next.at && t.seq < next.seq)
        ) {
          next = t;
        }
      }
      if (next === undefined) break;
      this.#timers.delete(next.id);
      this.#now = next.at;
      next.fn();
      await this.#settle();
    }
    this.#now = target;
    await this.#settle();
  }

  /** Puts the real timers back. */
  [Symbol.dispose](): void {
    globalThis.setTimeout = this.#realSetTimeout;
    globalThis.clearTimeout = this.#realClearTimeout;
  }
}
