import { useState, type FormEvent } from "react";

/** Asks for an API key; the page keeps it in memory only, and a board gets a canvas token from it (api.ts). */
export function KeyPrompt({ reason, onKey }: { reason: string; onKey: (key: string) => void }) {
  const [key, setKey] = useState("");
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (key.trim()) onKey(key.trim());
  };
  return (
    <main className="page">
      <form className="key-prompt" onSubmit={submit}>
        <h1>API key</h1>
        <p role="status">{reason}</p>
        <label>
          API key
          {/* The page asks for this one thing: the field takes the focus it was opened for. */}
          {/* eslint-disable-next-line jsx-a11y/no-autofocus */}
          <input type="password" value={key} onChange={(event) => setKey(event.target.value)} autoFocus />
        </label>
        <p className="hint">
          The key stays in this page&apos;s memory only; each board you open works through a short-lived token of its
          own.
        </p>
        <button type="submit">Use key</button>
      </form>
    </main>
  );
}
