// A running job's honest clock: the time it has taken so far, ticking every second whatever the provider reports,
// beside how long this provider and model usually take.
import { useEffect, useState } from "react";

export function Elapsed({ since, typical }: { since?: string; typical?: number }) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, []);
  if (!since) return null;
  const seconds = Math.max(0, Math.floor((now - Date.parse(since)) / 1000));
  return (
    <p className="elapsed" aria-live="off">
      <span data-testid="elapsed">{clock(seconds)}</span>
      {typical !== undefined && (
        <span className="hint">
          <span className="hint-separator"> · </span>usually ~{Math.max(1, Math.round(typical))} s
        </span>
      )}
    </p>
  );
}

function clock(seconds: number): string {
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}
