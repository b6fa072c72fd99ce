// Builds Hangar's web UI into dist/: hashed, minified bundles under
// dist/assets/ and dist/index.html, which loads them. The Go server embeds
// dist/ (see embed.go), so dist/ is committed: `go build` alone serves the UI.
//
//   node build.mjs            build once
//   node build.mjs --watch    rebuild on change (development)
import * as esbuild from 'esbuild';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(root, 'dist');
const watch = process.argv.includes('--watch');

const options = {
  absWorkingDir: root,
  entryPoints: { app: 'src/main.tsx' },
  outdir: path.join(dist, 'assets'),
  entryNames: '[name]-[hash]',
  chunkNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  target: ['chrome111', 'firefox115', 'safari16.4'],
  minify: true,
  sourcemap: false,
  legalComments: 'linked',
  metafile: true,
  jsx: 'automatic',
  jsxImportSource: 'preact',
  define: { 'process.env.NODE_ENV': '"production"' },
  logLevel: 'warning',
  plugins: [{ name: 'index.html', setup: (b) => b.onEnd(writeIndex) }],
};

// writeIndex writes dist/index.html from index.html with the entry's
// hashed script and stylesheet.
async function writeIndex(result) {
  if (result.errors.length) return;
  const outputs = result.metafile.outputs;
  let js, css;
  for (const [file, out] of Object.entries(outputs)) {
    if (out.entryPoint === 'src/main.tsx' && file.endsWith('.js')) {
      js = file;
      css = out.cssBundle;
    }
  }
  if (!js) throw new Error('build.mjs: no entry output in the metafile');
  const url = (f) => '/' + path.relative(dist, path.join(root, f)).split(path.sep).join('/');
  let html = await readFile(path.join(root, 'index.html'), 'utf8');
  html = html.replace('<!--css-->', css ? `<link rel="stylesheet" href="${url(css)}">` : '');
  html = html.replace('<!--js-->', `<script type="module" src="${url(js)}"></script>`);
  await writeFile(path.join(dist, 'index.html'), html);
  // Gzipped copies, served to browsers that take them (internal/server/ui.go).
  for (const file of Object.keys(outputs)) {
    if (!/\.(js|css)$/.test(file)) continue;
    const data = await readFile(path.join(root, file));
    await writeFile(path.join(root, file + '.gz'), gzipSync(data, { level: 9 }));
  }
  const sizes = Object.entries(outputs)
    .filter(([f]) => !f.endsWith('.txt'))
    .map(([f, o]) => `  ${path.relative(dist, path.join(root, f))} ${(o.bytes / 1024).toFixed(1)} KiB`);
  console.log(`built dist/ (${new Date().toLocaleTimeString()}):\n${sizes.join('\n')}`);
}

await rm(dist, { recursive: true, force: true });
await mkdir(path.join(dist, 'assets'), { recursive: true });
if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log('watching src/ for changes');
} else {
  await esbuild.build(options);
}
