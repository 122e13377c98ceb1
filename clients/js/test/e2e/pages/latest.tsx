// useLatest and useTopic on one page: the newest event of a topic at once, then live ones.
import { createRoot } from "react-dom/client";
import { useLatest, useTopic } from "../../../src/react.js";

function Latest({ topic }: { topic: string }) {
  const { value, event, status } = useLatest<{ status?: string; percent?: number }>(topic, { hub: location.origin });
  const { events } = useTopic(topic, { hub: location.origin });
  return (
    <div id="latest" data-type={event?.type ?? ""} data-status={status} data-live={events.map((e) => e.type).join(",")}>
      {event?.type} {value?.status}
    </div>
  );
}

const topic = new URLSearchParams(location.search).get("topic") ?? "";
createRoot(document.getElementById("root")!).render(<Latest topic={topic} />);
