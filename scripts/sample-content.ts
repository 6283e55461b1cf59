// Sample content for `npm run demo`: a 14-section vision and a ~20-page book in three
// settings. (The status page embeds its own shorter copy of the vision: it is browser code
// and cannot import this module.)

export interface SampleSection {
  key: string;
  title: string;
  text: string;
}

export const SAMPLE_VISION: SampleSection[] = [
  {
    key: 'forward',
    title: 'Forward',
    text: 'This is the life I am choosing, one clear day at a time. I wrote it down so that I can hear it, believe it and live it. Everything that follows is already on its way to me.',
  },
  {
    key: 'fun_recreation',
    title: 'Fun & recreation',
    text: 'I make time to play every single week. I laugh easily, I try new games and I say yes to adventures with friends. Joy is part of my routine, not a reward at the end of it.',
  },
  {
    key: 'health_vitality',
    title: 'Health & vitality',
    text: 'My body is strong, rested and full of energy. I move every morning, I eat food that fuels me and I sleep deeply every night. I feel light and capable from the moment I wake.',
  },
  {
    key: 'travel_adventure',
    title: 'Travel & adventure',
    text: 'I explore a new place every season. I have walked coastal paths, slept under mountain stars and tasted food in busy markets far from home. The world feels open and friendly to me.',
  },
  {
    key: 'career',
    title: 'Career',
    text: 'I do work that matters, and I do it well. People trust my judgement and bring me their hardest problems. I grow a little more skilled every month.',
  },
  {
    key: 'finances',
    title: 'Finances',
    text: 'Money flows to me steadily and I manage it with calm confidence. My savings grow every month and I give generously. I feel secure and free.',
  },
  {
    key: 'relationships',
    title: 'Relationships',
    text: 'I am surrounded by people who lift me up. I listen with my whole attention and I speak kindly. My closest friendships grow deeper every year.',
  },
  {
    key: 'family',
    title: 'Family',
    text: 'My family feels my love in small daily ways. We share meals, stories and quiet evenings together. Home is where we recharge and cheer each other on.',
  },
  {
    key: 'home',
    title: 'Home',
    text: 'My home is bright, calm and uncluttered. Every room has a purpose and a little beauty. I love coming back to it at the end of the day.',
  },
  {
    key: 'learning',
    title: 'Learning',
    text: 'I stay curious and I learn something new every day. I read, I ask questions and I practise until new skills feel natural. My mind is sharp and playful.',
  },
  {
    key: 'creativity',
    title: 'Creativity',
    text: 'I create something with my hands or my words every week. Ideas come to me easily and I give them room to grow. Making things is how I feel most alive.',
  },
  {
    key: 'community',
    title: 'Community',
    text: 'I am a generous part of my community. I know my neighbours by name and I show up when someone needs help. Together we make this place better.',
  },
  {
    key: 'spirituality',
    title: 'Spirituality',
    text: 'I begin each day in stillness and gratitude. I feel connected to something larger than myself. Peace is always one slow breath away.',
  },
  {
    key: 'conclusion',
    title: 'Conclusion',
    text: 'This is my vision, and I am living it now. Each day I take one more step toward it with patience and courage. I am grateful for all of it.',
  },
];

export const SAMPLE_VARIANTS = ['voice_only', 'sleep', 'energy'];
export const SAMPLE_VOICE = 'alloy';

// The book: a forest at dawn, a ship in a storm, a city at night (8, 6 and 6 pages, so no
// spread straddles two settings). Each setting's
// sentences name its place often enough for the local keyword analyzer (and any LLM) to
// see three scenes.
const SETTINGS: { pages: number; sentences: string[] }[] = [
  {
    pages: 8,
    sentences: [
      'Dawn came grey and slow through the forest, and mist lay low between the trees.',
      'Wren pushed through the wet bracken, and the ferns soaked her boots to the ankle.',
      'Somewhere above her a woodpecker knocked at an old oak, patient as a clock.',
      'The path narrowed where the pines crowded in, their roots knotted across the ground.',
      'Moss on the fallen trunks glowed a green so bright it looked painted.',
      'At the edge of a clearing a deer lifted its head from the grass and watched her pass.',
      'Birds woke in every branch, and the woods filled with their argument.',
      'A squirrel ran the length of a bough and scolded her from the safety of the high trees.',
      'The leaves overhead began to move as the sunrise found the top of the canopy.',
      '"Keep the sunrise on your left," her grandfather had said, "and the woods will let you out at the old road."',
    ],
  },
  {
    pages: 6,
    sentences: [
      'By noon the ship was far from the harbour, and the sea had turned the colour of slate.',
      'Waves broke over the bow and ran the length of the deck in a roaring sheet of spray.',
      'The crew hauled on the rigging while the captain shouted into the wind from the helm.',
      'Thunder rolled across the water, and lightning showed every rope of the mast in silver.',
      'Wren clung to the rail as the hull climbed a wave and fell away into the trough beyond it.',
      'Gulls had long since fled the storm; only the sailors and the ocean were left.',
      'Salt stung her eyes, and the boat groaned in every plank of its keel.',
      '"Reef the mainsail!" the bosun bellowed, and two sailors ran along the slanting deck.',
      'The anchor chain rattled in its locker like something alive and angry.',
    ],
  },
  {
    pages: 6,
    sentences: [
      'The city glowed in the dark, and the street was still wet from the storm.',
      'Taxis and buses crawled along the avenue, their lights smeared across the pavement.',
      'A crowd spilled out of a cafe onto the sidewalk, laughing under a flickering neon sign.',
      'Wren walked past shuttered shops and a tall building where one window was still lit.',
      'A siren wailed somewhere downtown, and the traffic parted to let it through.',
      'She stopped under a streetlamp at the corner of the alley and listened to the city hum.',
      'High on a rooftop someone was playing a trumpet, slow and out of tune.',
      '"You made it," said her sister, waiting on the apartment steps, "and in weather like this."',
    ],
  },
];

/** A deterministic ~20-page book: every run is identical. */
export function sampleBook(): { title: string; author: string; pages: string[] } {
  let seed = 20260601;
  const random = () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
  const pages: string[] = [];
  for (const setting of SETTINGS) {
    for (let p = 0; p < setting.pages; p++) {
      const paragraphs: string[] = [];
      let length = 0;
      while (length < 1100) {
        const count = 2 + Math.floor(random() * 3);
        const paragraph = Array.from({ length: count }, () => setting.sentences[Math.floor(random() * setting.sentences.length)]!).join(' ');
        paragraphs.push(paragraph);
        length += paragraph.length + 2;
      }
      pages.push(paragraphs.join('\n\n'));
    }
  }
  return { title: 'The Forest, the Storm and the City', author: 'soundqueue demo', pages };
}
