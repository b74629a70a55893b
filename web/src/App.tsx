// Three pages, by path: `/` lists the canvases, `/canvases/{workflowId}` is one board, `/ops` is the operator
// view (the API serves every one of these paths).
import { useCallback, useEffect, useState } from "react";
import { ApiError, api, apiKey, setApiKey, type ClientConfig } from "./api";
import { BoardPage } from "./board/BoardPage";
import { CanvasList } from "./CanvasList";
import { KeyPrompt } from "./KeyPrompt";
import { OpsPage } from "./OpsPage";
import { ToastProvider } from "./Toasts";

function currentCanvas(): string | null {
  const match = /^\/canvases\/([^/]+)\/?$/.exec(window.location.pathname);
  return match?.[1] ? decodeURIComponent(match[1]) : null;
}

function onOpsPage(): boolean {
  return /^\/ops\/?$/.test(window.location.pathname);
}

export function navigate(path: string): void {
  window.history.pushState(null, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

export function App() {
  const [canvasId, setCanvasId] = useState(currentCanvas);
  const [ops, setOps] = useState(onOpsPage);
  const [config, setConfig] = useState<ClientConfig | null>(null);
  const [needKey, setNeedKey] = useState<string | null>(null);

  useEffect(() => {
    const onPop = () => {
      setCanvasId(currentCanvas());
      setOps(onOpsPage());
    };
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);

  useEffect(() => {
    api.config().then(setConfig, () => setConfig({ apiKeysRequired: false, temporalNamespace: "default" } as ClientConfig));
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
      {canvasId ? (
        <BoardPage key={canvasId} canvasId={canvasId} config={config} onUnauthorized={onUnauthorized} />
      ) : ops ? (
        <OpsPage onUnauthorized={onUnauthorized} />
      ) : (
        <CanvasList onUnauthorized={onUnauthorized} />
      )}
    </ToastProvider>
  );
}
