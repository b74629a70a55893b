// The app: asks for an API key when the server needs one, then shows the page the path names (routes.ts).
import { useCallback, useEffect, useState } from "react";
import { ApiError, api, apiKey, setApiKey, type ClientConfig } from "./api";
import { BoardPage } from "./board/BoardPage";
import { CanvasList } from "./CanvasList";
import { KeyPrompt } from "./KeyPrompt";
import { OpsPage } from "./OpsPage";
import { useRoute } from "./routes";
import { ToastProvider } from "./Toasts";

export function App() {
  const route = useRoute();
  const [config, setConfig] = useState<ClientConfig | null>(null);
  const [needKey, setNeedKey] = useState<string | null>(null);

  useEffect(() => {
    api
      .config()
      .then(setConfig, () => setConfig({ apiKeysRequired: false, temporalNamespace: "default" } as ClientConfig));
  }, []);

  // Any call answered 401 asks for a key once; a wrong one says so instead of leaving a blank board.
  const onUnauthorized = useCallback((error: ApiError) => {
    const presented = apiKey() !== null;
    setApiKey(null);
    if (error.code !== "unauthorized") setNeedKey(error.message);
    else setNeedKey(presented ? "That API key was refused; check it and try again." : "This server needs an API key.");
  }, []);

  if (!config) return <main className="page">Loading…</main>;
  if (needKey)
    return (
      <KeyPrompt
        reason={needKey}
        onKey={(key) => {
          setApiKey(key);
          setNeedKey(null);
        }}
      />
    );
  return (
    <ToastProvider>
      {route.page === "board" ? (
        <BoardPage key={route.canvasId} canvasId={route.canvasId} config={config} onUnauthorized={onUnauthorized} />
      ) : route.page === "ops" ? (
        <OpsPage onUnauthorized={onUnauthorized} />
      ) : (
        <CanvasList onUnauthorized={onUnauthorized} />
      )}
    </ToastProvider>
  );
}
