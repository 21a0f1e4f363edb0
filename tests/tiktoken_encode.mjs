// The tokenizer oracle for tests/test_tokenizer_parity.cpp: encodes text files with js-tiktoken's
// "gpt2" encoding (every "<|endoftext|>" in the text treated as ordinary text, like eco_prepare).
//
//   node tests/tiktoken_encode.mjs NODE_PREFIX LIST_FILE OUT_DIR
//
// NODE_PREFIX is where `npm install --prefix` put js-tiktoken (tools/fetch_data.sh: data/node).
// LIST_FILE names one UTF-8 text file per line; the ids of line i go to OUT_DIR/i.u32 as
// little-endian uint32. One process for all files, since node's start-up dominates small inputs.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [prefix, listFile, outDir] = process.argv.slice(2);
if (!prefix || !listFile || !outDir) {
  console.error('usage: node tiktoken_encode.mjs NODE_PREFIX LIST_FILE OUT_DIR');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(prefix), 'package.json'));
const { getEncoding } = require('js-tiktoken');
const enc = getEncoding('gpt2');

const files = fs.readFileSync(listFile, 'utf8').split('\n').filter((l) => l.length > 0);
fs.mkdirSync(outDir, { recursive: true });
files.forEach((file, i) => {
  const text = fs.readFileSync(file, 'utf8');
  const ids = Uint32Array.from(enc.encode(text, [], []));
  fs.writeFileSync(path.join(outDir, `${i}.u32`), Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength));
});
