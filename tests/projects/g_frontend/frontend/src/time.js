const units = [
  ["day", 86400],
  ["hour", 3600],
  ["minute", 60],
];

export function relativeTime(date, now = new Date()) {
  const seconds = Math.round((date - now) / 1000);
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  for (const [unit, size] of units) {
    if (Math.abs(seconds) >= size) {
      return format.format(Math.round(seconds / size), unit);
    }
  }
  return format.format(seconds, "second");
}
