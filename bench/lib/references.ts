/** The reference handshakes live with the bench CLI (src/loadgen/references.ts), which reports them as baselines. */
export * from '../../src/loadgen/references.js';
