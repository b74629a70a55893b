// The app: asks for an API key when the server needs one, then shows the page the path names (routes.ts). A board
// is reached through its canvas token (api.ts), so only the list and operations pages use the key itself.
import { useCallback, useEffect, useState } from "react";
import { ApiError, api, enterCanvas, forgetCanvasToken, hasApiKey, setApiKey, type ClientConfig } from "./api";
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
  // The canvas whose token is in hand (null off boards); the board renders once it matches the route.
  const [entered, setEntered] = useState<string | null>(null);
  const canvasId = route.page === "board" ? route.canvasId : null;

  useEffect(() => {
    api
      .config()
      .then(setConfig, () => setConfig({ apiKeysRequired: false, temporalNamespace: "default" } as ClientConfig));
  }, []);

  // Any call answered 401 asks for a key once; a wrong one says so instead of leaving a blank board.
  const onUnauthorized = useCallback(
    (error: ApiError) => {
      const presented = hasApiKey();
      setApiKey(null);
      if (canvasId) forgetCanvasToken(canvasId);
      setEntered(null);
      if (error.code === "invalid_canvas_token")
        setNeedKey("This board's access has expired; enter the API key again.");
      else if (error.code !== "unauthorized") setNeedKey(error.message);
      else
        setNeedKey(presented ? "That API key was refused; check it and try again." : "This server needs an API key.");
    },
    [canvasId],
  );

  useEffect(() => {
    if (!config || needKey) return;
    enterCanvas(canvasId, config.apiKeysRequired).then(
      () => setEntered(canvasId),
      (error: unknown) => {
        if (error instanceof ApiError && error.status === 401) onUnauthorized(error);
        else setNeedKey(error instanceof Error ? error.message : String(error));
      },
    );
  }, [config, needKey, canvasId, onUnauthorized]);

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
  if (entered !== canvasId) return <main className="page">Loading…</main>;
  return (
    <ToastProvider>
      {canvasId !== null ? (
        <BoardPage key={canvasId} canvasId={canvasId} config={config} onUnauthorized={onUnauthorized} />
      ) : route.page === "ops" ? (
        <OpsPage onUnauthorized={onUnauthorized} />
      ) : (
        <CanvasList onUnauthorized={onUnauthorized} />
      )}
    </ToastProvider>
  );
}
