// The app's three pages, by path: `/` lists the canvases, `/canvases/{workflowId}` is one board, `/ops` is the
// operator view (the API serves every one of these paths). Pages navigate through here, never through App.
import { useEffect, useState } from "react";

export type Route = { page: "canvases" } | { page: "board"; canvasId: string } | { page: "ops" };

export function routeOf(pathname: string): Route {
  const board = /^\/canvases\/([^/]+)\/?$/.exec(pathname);
  if (board?.[1]) return { page: "board", canvasId: decodeURIComponent(board[1]) };
  if (/^\/ops\/?$/.test(pathname)) return { page: "ops" };
  return { page: "canvases" };
}

export function navigate(path: string): void {
  window.history.pushState(null, "", path);
  window.dispatchEvent(new PopStateEvent("popstate"));
}

export function boardPath(canvasId: string): string {
  return `/canvases/${encodeURIComponent(canvasId)}`;
}

/** The current page, following the browser's back and forward buttons and `navigate`. */
export function useRoute(): Route {
  const [route, setRoute] = useState(() => routeOf(window.location.pathname));
  useEffect(() => {
    const onPop = () => setRoute(routeOf(window.location.pathname));
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  return route;
}
