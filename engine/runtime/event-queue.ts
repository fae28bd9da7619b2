/**
 * Single-consumer async queue: the engine pushes, one `for await` reads. Ending it (close or fail)
 * lets the reader drain what was pushed before.
 */
export class EventQueue<T> implements AsyncIterable<T> {
  #items: T[] = [];
  #waiter: ((result: IteratorResult<T>) => void) | null = null;
  #failer: ((error: unknown) => void) | null = null;
  #done = false;
  #error: unknown = undefined;
  #hasError = false;

  push(item: T): void {
    if (this.#done) return;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = this.#failer = null;
      w({ value: item, done: false });
    } else {
      this.#items.push(item);
    }
  }

  close(): void {
    this.#done = true;
    if (this.#waiter) {
      const w = this.#waiter;
      this.#waiter = this.#failer = null;
      w({ value: undefined, done: true });
    }
  }

  fail(error: unknown): void {
    if (this.#done) return;
    this.#error = error;
    this.#hasError = true;
    this.#done = true;
    if (this.#failer) {
      const f = this.#failer;
      this.#waiter = this.#failer = null;
      f(error);
    }
  }

  get isDone(): boolean {
    return this.#done;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#items.length > 0) return Promise.resolve({ value: this.#items.shift()!, done: false });
    if (this.#hasError) {
      this.#hasError = false;
      return Promise.reject(this.#error);
    }
    if (this.#done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.#waiter = resolve;
      this.#failer = reject;
    });
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return { next: () => this.next() };
  }
}
