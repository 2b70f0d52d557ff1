// Moved to src/conformance/raw-frontend.ts (vhostkit conformance ships it); the tests import it from there.
export * from '../../src/conformance/raw-frontend.js';
