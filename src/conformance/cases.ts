// The case table: the spec's rules first, then hostile input. docs/conformance.md lists it.
import type { ConformanceCase } from './case.js';
import { SPEC_CASES } from './cases-spec.js';
import { HOSTILE_CASES } from './cases-hostile.js';

export const CASES: readonly ConformanceCase[] = [...SPEC_CASES, ...HOSTILE_CASES];
