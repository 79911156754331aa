/**
 * Builds the dashboard into dist/: one HTML page and hashed assets, everything bundled (no CDN:
 * it works offline), served by the Mayfly server at `/`.
 */
import { defineConfig } from 'vite';

export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  // Preact's JSX runtime, without a plugin.
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    assetsDir: 'assets',
    sourcemap: false,
    reportCompressedSize: true,
  },
  logLevel: 'warn',
});
