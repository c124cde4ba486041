/** The benchmarks' shared statistics live with the product (src/lib/stats.ts): the bench CLI reports with them too. */
export * from '../../src/lib/stats.js';
