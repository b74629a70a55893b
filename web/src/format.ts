// How the app writes amounts: an image costs cents, so below a dollar the tenth of a cent shows.
export function usd(value: number): string {
  return value < 1 ? `$${value.toFixed(3)}` : `$${value.toFixed(2)}`;
}
