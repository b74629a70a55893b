// An image of the person's own, dropped or pasted onto the board: an edge from it feeds a refinement.
import { Handle, Position, type NodeProps } from "@xyflow/react";
import { memo } from "react";
import { useBoardActions } from "./actions";
import type { UploadedNode } from "./nodeData";

function UploadedImageViewInner({ id, data }: NodeProps<UploadedNode>) {
  const actions = useBoardActions();
  const name = data.label ?? "uploaded image";
  return (
    <div className="image-node" data-node-id={id} data-status="completed">
      <header className="image-node-header">
        <span className="badge badge-completed">image</span>
        <span className="processor">{name}</span>
      </header>
      {data.sourceUrl && (
        <button type="button" className="image-button nodrag" onClick={() => actions.open(id)}>
          <img className="thumbnail" src={data.sourceUrl} alt={name} />
        </button>
      )}
      <Handle type="source" position={Position.Right} />
    </div>
  );
}

export const UploadedImageView = memo(UploadedImageViewInner);
