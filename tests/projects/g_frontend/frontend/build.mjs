// Bundles frontend/src into frontend/dist, which Django lists in STATICFILES_DIRS.
import { fileURLToPath } from "node:url";
import path from "node:path";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));

const options = {
  entryPoints: [path.join(here, "src", "app.js"), path.join(here, "src", "app.css")],
  outdir: path.join(here, "dist"),
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ["es2020"],
  logLevel: "info",
};

if (process.argv.includes("--watch")) {
  const context = await esbuild.context(options);
  await context.watch();
} else {
  await esbuild.build(options);
}
