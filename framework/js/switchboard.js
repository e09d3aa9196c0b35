// Switchboard browser/Node client: written by the JS client work in progress.
export {};
