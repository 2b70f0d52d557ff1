// Command-line parsing for the bench entry points: --help prints the usage, and a bad
// option or value ends the run with one line saying why (and the usage), not a stack trace.
import { parseArgs, type ParseArgsConfig } from 'node:util';

type Options = NonNullable<ParseArgsConfig['options']>;

/** Ends the process with `message` and the usage (exit code 2). */
export function usageError(usage: string, message: string): never {
  process.stderr.write(`${message}\n\n${usage}\n`);
  process.exit(2);
}

/** parseArgs with strict options and --help / -h. */
export function benchArgs<O extends Options>(usage: string, options: O): ParsedValues<O> {
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  try {
    values = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }).values;
  } catch (e) {
    usageError(usage, (e as Error).message);
  }
  if (values.help === true) {
    process.stdout.write(`${usage}\n`);
    process.exit(0);
  }
  return values as ParsedValues<O>;
}

type ParsedValues<O extends Options> = ReturnType<typeof parseArgs<{ options: O; strict: true }>>['values'];
