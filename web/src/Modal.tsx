// A modal dialog on the browser's own <dialog>: shown with showModal(), so the rest of the page is inert and
// focus stays inside (it starts on the first field or button), and Escape closes it.
import { useEffect, useRef, type ReactNode } from "react";

type Props = { label: string; className?: string; onClose: () => void; children: ReactNode };

export function Modal({ label, className, onClose, children }: Props) {
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const element = dialog.current;
    if (element && !element.open) element.showModal();
    return () => element?.close();
  }, []);
  return (
    <dialog
      ref={dialog}
      aria-label={label}
      className={className ? `dialog ${className}` : "dialog"}
      onCancel={(event) => {
        event.preventDefault(); // React unmounts it; closing it here too would leave React's state behind
        onClose();
      }}
    >
      {children}
    </dialog>
  );
}
