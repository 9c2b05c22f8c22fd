const topo = require("topojson-client");
const fs = require("fs");
const w = require("world-atlas/countries-110m.json");
const round = (c) => Array.isArray(c[0]) ? c.map(round) : [Math.round(c[0]*100)/100, Math.round(c[1]*100)/100];
const countries = topo.feature(w, w.objects.countries);
const feats = countries.features.map((f) => ({type: "Feature", properties: {name: f.properties.name}, geometry: {type: f.geometry.type, coordinates: round(f.geometry.coordinates)}}));
const borders = topo.mesh(w, w.objects.countries, (a, b) => a !== b);
const coast = topo.mesh(w, w.objects.countries, (a, b) => a === b);
const out = {type: "FeatureCollection", features: [
  ...feats,
  {type: "Feature", properties: {layer: "borders"}, geometry: {type: borders.type, coordinates: round(borders.coordinates)}},
  {type: "Feature", properties: {layer: "coastline"}, geometry: {type: coast.type, coordinates: round(coast.coordinates)}},
]};
fs.writeFileSync("ne_110m.json", JSON.stringify(out));
console.log(feats.length, fs.statSync("ne_110m.json").size);
