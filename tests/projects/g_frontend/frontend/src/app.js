import { relativeTime } from "./time.js";

document.addEventListener("DOMContentLoaded", () => {
  for (const element of document.querySelectorAll("time[datetime]")) {
    element.title = element.textContent;
    element.textContent = relativeTime(new Date(element.dateTime));
  }
  document.body.dataset.frontend = "ready";
});
