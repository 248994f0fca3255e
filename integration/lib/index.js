// One import for test files.
export * from './util.js';
export * from './broker.js';
export * from './client.js';
export * from './warren.js';
export * from './load.js';
export * from './browser.js';
export * from './rawamqp.js';
