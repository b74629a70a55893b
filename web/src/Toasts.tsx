// Failures raise a toast (role="alert"): a sentence naming what failed, and what can be done about it (its
// actions, e.g. Show node and Retry). Each goes after a while, on Dismiss, or once an action is taken.
import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";

// `keep`: the toast stays after the action (Show node leaves Retry within reach).
export type ToastAction = { label: string; run: () => void; keep?: boolean };
type Toast = { id: number; message: string; actions: ToastAction[] };
type Notify = (message: string, actions?: ToastAction[]) => void;

const ToastContext = createContext<Notify>(() => undefined);
const TOAST_MS = 10_000;
const TOAST_WITH_ACTIONS_MS = 20_000;
let nextId = 1;

export function ToastProvider({ children }: { children: ReactNode }) {
  const [toasts, setToasts] = useState<Toast[]>([]);
  const dismiss = useCallback((id: number) => setToasts((all) => all.filter((toast) => toast.id !== id)), []);
  const notify = useCallback<Notify>(
    (message, actions = []) => {
      const id = nextId++;
      setToasts((all) => [...all.slice(-4), { id, message, actions }]);
      window.setTimeout(() => dismiss(id), actions.length ? TOAST_WITH_ACTIONS_MS : TOAST_MS);
    },
    [dismiss],
  );
  const value = useMemo(() => notify, [notify]);
  return (
    <ToastContext.Provider value={value}>
      {children}
      <div className="toasts">
        {toasts.map((toast) => (
          <div key={toast.id} role="alert" className="toast">
            <p>{toast.message}</p>
            <div className="toast-actions">
              {toast.actions.map((action) => (
                <button
                  key={action.label}
                  type="button"
                  onClick={() => {
                    action.run();
                    if (!action.keep) dismiss(toast.id);
                  }}
                >
                  {action.label}
                </button>
              ))}
              <button type="button" onClick={() => dismiss(toast.id)}>
                Dismiss
              </button>
            </div>
          </div>
        ))}
      </div>
    </ToastContext.Provider>
  );
}

export function useToast(): Notify {
  return useContext(ToastContext);
}
