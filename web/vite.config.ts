import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The API serves the build (web/dist) at `/`; `npm run dev` proxies the API for hot reloading.
export default defineConfig({
  plugins: [react()],
  build: { outDir: "dist", sourcemap: true },
  server: {
    proxy: {
      "/v1": "http://127.0.0.1:8000",
      "/files": "http://127.0.0.1:8000",
    },
  },
});
