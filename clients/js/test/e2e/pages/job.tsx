// The seeds' job-progress page, with useJob: a test page bundled by esbuild at test time.
import { createRoot } from "react-dom/client";
import { useJob } from "../../../src/react.js";

declare global {
  interface Window {
    renders: { state: string | undefined; progress: number | undefined; done: boolean }[];
  }
}
window.renders = [];

function Job({ id }: { id: string }) {
  const { state, progress, result, error, done } = useJob<{ output?: { url?: string } }>(id, { hub: location.origin });
  window.renders.push({ state, progress, done });
  return (
    <div id="job" data-state={state ?? ""} data-progress={progress ?? ""} data-done={String(done)}>
      <progress max={100} value={progress ?? 0} />
      <p>
        {state ?? "waiting"} {result?.output?.url ?? ""} {error ? String(JSON.stringify(error)) : ""}
      </p>
    </div>
  );
}

const id = new URLSearchParams(location.search).get("job") ?? "";
createRoot(document.getElementById("root")!).render(<Job id={id} />);
