/**
 * Piscina task module for the load generator's CPU-heavy shards, run off the thread that drives
 * the kernel (whose event loop also carries the device workers' messages):
 *   { task: 'parse', text } -> ParsedTrace (strace output)
 */
import { parseStrace, type ParsedTrace } from './strace.js';

export type ShardTask = { task: 'parse'; text: string };

export default function shard(t: ShardTask): ParsedTrace {
  return parseStrace(t.text);
}
