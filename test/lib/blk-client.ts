// Moved to src/conformance/blk-client.ts (vhostkit conformance ships it); the tests import it from there.
export * from '../../src/conformance/blk-client.js';
