// js-libp2p 3 (and its dependencies) call Promise.withResolvers, which Node.js has from
// version 22 on; this machine's Node is 20. This is the ES2024 definition, installed only
// where it is missing.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
