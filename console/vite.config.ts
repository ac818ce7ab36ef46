// The console is built into dist/, which the server serves at / on its HTTP
// port (--http-address). Everything is bundled: no CDN at run time.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // elkjs is one large module; it is loaded with the page, not fetched later.
    chunkSizeWarningLimit: 2000,
    // No report of how long plugins took: noise in `make`'s output.
    rolldownOptions: { checks: { pluginTimings: false } },
  },
  server: {
    // `npm run dev` proxies the API to a server started with --http-address 127.0.0.1:8080.
    proxy: { "/flowmanager.v1.": "http://127.0.0.1:8080" },
  },
});
