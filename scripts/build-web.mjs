// Bundles the browser device (src/web/device) into dist/web/device: the page, its ES module and its compute
// threads' (a Web Worker's) module, which the base station serves at /device beside the kernels' .wasm
// (nothing comes from a CDN); and the dashboard (src/web/dashboard) into dist/web/dashboard.
// The page shares its modules with the Node device; the few Node built-ins those import for Node-only
// paths (reading model files, worker threads, the kernel file) become modules whose every export throws
// if called, so a Node-only path reached in the browser fails with a clear error instead of the bundle
// failing to load.
// Usage: node scripts/build-web.mjs   (npm run build runs it; writes dist/web)
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { parseScriptArgs } from "./lib/script-args.mjs";

parseScriptArgs(import.meta.url, { options: {} }); // no options: --help, or a stray one stops before the build

const out = "dist/web/device";
mkdirSync(out, { recursive: true });

const nodeBuiltins = {
  name: "node-builtins-unavailable",
  setup(b) {
    b.onResolve({ filter: /^node:/ }, (args) => ({ path: args.path, namespace: "node-unavailable" }));
    b.onLoad({ filter: /.*/, namespace: "node-unavailable" }, async (args) => {
      const names = Object.keys(await import(args.path)).filter((n) => n !== "default" && /^[A-Za-z_$][\w$]*$/.test(n));
      // named exports are pure, so only those the bundle uses stay in it; the default export answers any name
      const contents = [
        `const unavailable = (name) => () => { throw new Error(\`\${name} is not available in a browser\`); };`,
        ...names.map((n) => `export const ${n} = /* @__PURE__ */ unavailable(${JSON.stringify(`${args.path} ${n}`)});`),
        `export default /* @__PURE__ */ new Proxy({}, { get: (_, name) => unavailable(\`${args.path} \${String(name)}\`) });`,
      ].join("\n");
      return { contents, loader: "js" };
    });
  },
};

/** How every page's modules are bundled: ES modules for current browsers, minified, with source maps. */
const bundle = { bundle: true, format: "esm", platform: "browser", target: "es2022", sourcemap: true, minify: true, logLevel: "warning" };

await build({ ...bundle, entryPoints: { device: "src/web/device/main.ts", "kernel-worker": "src/web/device/kernel-thread.ts" }, outdir: out, plugins: [nodeBuiltins] });
copyFileSync("src/web/device/index.html", `${out}/index.html`);

// The dashboard (src/web/dashboard), served at / : its page and one ES module, ECharts bundled in (tree-shaken).
const dashboard = "dist/web/dashboard";
mkdirSync(dashboard, { recursive: true });
await build({ ...bundle, entryPoints: { dashboard: "src/web/dashboard/main.ts" }, outdir: dashboard });
copyFileSync("src/web/dashboard/index.html", `${dashboard}/index.html`);
