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
      <div className="node-picture">
        {data.sourceUrl && (
          <button type="button" className="image-button nodrag" onClick={() => actions.open(id)}>
            <img className="thumbnail" src={data.sourceUrl} alt={name} />
          </button>
        )}
        <div className="node-badges">
          <span className="badge badge-completed">your image</span>
        </div>
      </div>
      <span className="processor">{name}</span>
      <Handle type="source" position={Position.Right} />
    </div>
  );
}

export const UploadedImageView = memo(UploadedImageViewInner);
